package transport

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/capraft/capraft/schema"
)

// A send the driver refuses (it is stopping) ends the stream: later sends
// on it are refused without reaching the driver, and the sender opens a
// new stream.
func TestSendTheDriverRefusesEndsTheStream(t *testing.T) {
	h := newFakeHandler()
	h.refuse = errors.New("stopping")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st := openRawStream(t, ctx, h)
	send := func() error {
		m := appMsg(2, 0, 1, 8, nil)
		f, frel := st.Send(ctx, func(p schema.PeerStream_send_Params) error {
			l, err := p.NewMsgs(1)
			if err != nil {
				return err
			}
			return encodeMessage(l.At(0), &m)
		})
		defer frel()
		_, err := f.Struct()
		return err
	}
	if err := send(); err == nil || !strings.Contains(err.Error(), "stopping") {
		t.Fatalf("first send: %v, want the driver's refusal", err)
	}
	delivered := h.count()
	if err := send(); err == nil || !strings.Contains(err.Error(), "stream ended") {
		t.Fatalf("send after a refusal: %v, want the stream ended", err)
	}
	if got := h.count(); got != delivered {
		t.Fatalf("a send on an ended stream reached the driver (%d messages, %d before)", got, delivered)
	}
}
