package echo

import "errors"

var errNoListener = errors.New("subscribe: listener is null; pass an EchoListener capability")
