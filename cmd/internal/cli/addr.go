package cli

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// AddrExample is the address the errors of ParseAddr suggest.
const AddrExample = "127.0.0.1:7000"

// AddrRules says which host:port forms an address given on the command
// line may take. The zero value accepts only addresses other machines can
// dial: a host and a port from 1 to 65535.
type AddrRules struct {
	// Listen accepts what only a listening address means: an empty host
	// or 0.0.0.0 / [::] (every interface) and port 0 (any free port).
	Listen bool
}

// ParseAddr checks that s is host:port under rules and returns it in a
// canonical form (IP literals normalized, host names lower-cased), so that
// two spellings of one address compare equal. The error says what is
// wrong with s and what to give instead; it does not name the flag.
func ParseAddr(s string, rules AddrRules) (string, error) {
	q := QuoteShort(s, 64)
	if i := strings.Index(s, "://"); i >= 0 {
		return "", fmt.Errorf("%s is a URL; give host:port without %q, e.g. %s", q, s[:i+3], AddrExample)
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		var ae *net.AddrError
		switch {
		case s == "":
			return "", fmt.Errorf("empty address; give host:port, e.g. %s", AddrExample)
		case !strings.Contains(s, ":"):
			return "", fmt.Errorf("%s has no port; give host:port, e.g. %s", q, AddrExample)
		case strings.Count(s, ":") > 1 && !strings.HasPrefix(s, "["):
			return "", fmt.Errorf("%s is not host:port; write an IPv6 address in brackets, e.g. [::1]:7000", q)
		case errors.As(err, &ae):
			return "", fmt.Errorf("%s is not host:port (%s), e.g. %s", q, ae.Err, AddrExample)
		}
		return "", fmt.Errorf("%s is not host:port, e.g. %s", q, AddrExample)
	}
	lo := 1
	if rules.Listen {
		lo = 0
	}
	p, err := strconv.ParseUint(port, 10, 64)
	if err != nil || p < uint64(lo) || p > 65535 {
		return "", fmt.Errorf("%s: the port must be a number from %d to 65535, e.g. %s", q, lo, AddrExample)
	}
	if host == "" {
		if rules.Listen {
			return net.JoinHostPort("", port), nil
		}
		return "", fmt.Errorf("%s has no host; give one, e.g. %s", q, AddrExample)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		ip = ip.Unmap()
		if ip.IsUnspecified() && !rules.Listen {
			return "", fmt.Errorf("%s means every interface of a listening node, which nobody can connect to; give this node's own address, e.g. %s", q, AddrExample)
		}
		return net.JoinHostPort(ip.String(), strconv.FormatUint(p, 10)), nil
	}
	if !isHostName(host) {
		return "", fmt.Errorf("%s: %s is neither an IP address nor a host name, e.g. %s", q, QuoteShort(host, 64), AddrExample)
	}
	return net.JoinHostPort(strings.ToLower(strings.TrimSuffix(host, ".")), strconv.FormatUint(p, 10)), nil
}

// IsWildcard reports whether addr, a valid listening address, listens on
// every interface (an empty host, 0.0.0.0 or [::]).
func IsWildcard(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip, err := netip.ParseAddr(host)
	return host == "" || err == nil && ip.IsUnspecified()
}

// isHostName reports whether h is a plausible DNS name: dot-separated
// labels of letters, digits, '-' and '_', at most 253 bytes, with an
// optional final dot.
func isHostName(h string) bool {
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// IsLoopback reports whether addr, a valid listening address, listens on a
// loopback address only (127.0.0.0/8, ::1 or "localhost"): only this
// machine can connect to it.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}
