package rpc

import (
	"bytes"
	"fmt"
	"net"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"
)

// discardConn is a net.Conn that takes every write and reads from r: the
// codec's own cost, without a socket's.
type discardConn struct {
	net.Conn
	r *bytes.Reader
}

func (c *discardConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c *discardConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *discardConn) SetReadDeadline(time.Time) error  { return nil }
func (c *discardConn) SetWriteDeadline(time.Time) error { return nil }
func (c *discardConn) Close() error                     { return nil }

// benchCall builds a Call message carrying a payload of size bytes (in a
// Data field of its params), like a small KV put.
func benchCall(b *testing.B, size int) *capnp.Message {
	b.Helper()
	msg, m, err := newRPCMessage()
	if err != nil {
		b.Fatal(err)
	}
	call, err := m.NewCall()
	if err != nil {
		b.Fatal(err)
	}
	call.SetQuestionId(7)
	call.SetInterfaceId(0x1234)
	payload, err := call.NewParams()
	if err != nil {
		b.Fatal(err)
	}
	data, err := capnp.NewData(m.Segment(), make([]byte, size))
	if err != nil {
		b.Fatal(err)
	}
	if err := payload.SetContent(data.ToPtr()); err != nil {
		b.Fatal(err)
	}
	return msg
}

// BenchmarkCodecEncode measures the codec's per-message work on the send
// path (framing, limits, the write itself into a discarding connection).
//
//	go test -run '^$' -bench BenchmarkCodec ./rpc/
func BenchmarkCodecEncode(b *testing.B) {
	for _, size := range []int{16, 64 << 10} {
		b.Run(byteSize(size), func(b *testing.B) {
			c := newCodec(&discardConn{}, limits{maxMessageSize: DefaultMaxMessageSize}, nil)
			msg := benchCall(b, size)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := c.Encode(msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCodecDecode measures the codec's per-message work on the
// receive path, decoding frames from memory.
func BenchmarkCodecDecode(b *testing.B) {
	for _, size := range []int{16, 64 << 10} {
		b.Run(byteSize(size), func(b *testing.B) {
			frame, err := benchCall(b, size).Marshal()
			if err != nil {
				b.Fatal(err)
			}
			const batch = 64
			stream := bytes.Repeat(frame, batch)
			conn := &discardConn{r: bytes.NewReader(stream)}
			c := newCodec(conn, limits{maxMessageSize: DefaultMaxMessageSize}, nil)
			b.ReportAllocs()
			b.SetBytes(int64(len(frame)))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if i%batch == 0 {
					conn.r.Reset(stream)
				}
				msg, err := c.Decode()
				if err != nil {
					b.Fatal(err)
				}
				msg.Release()
			}
		})
	}
}

func byteSize(n int) string {
	if n >= 1<<10 {
		return fmt.Sprintf("size=%dKiB", n>>10)
	}
	return fmt.Sprintf("size=%dB", n)
}
