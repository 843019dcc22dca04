package kv

import (
	"encoding/binary"
	"fmt"
)

// commandVersion is the first byte of every encoded Command.
const commandVersion = 1

// Op flag bits of the encoding.
const (
	opFlagDeleteOnSuccess = 1 << iota
	opFlagCompareValue
	opFlagCompareRevision
	opFlagLease
	// opFlagPrefix marks an OpDelete of a prefix (WriteOp.Prefix); it is
	// refused on any other op type.
	opFlagPrefix
	opFlagsKnown = opFlagDeleteOnSuccess | opFlagCompareValue | opFlagCompareRevision | opFlagLease | opFlagPrefix
)

// minOpSize is the fewest bytes an encoded op takes: seq, type, compare,
// flags, key length, value length.
const minOpSize = 6

// AppendBinary appends c's encoding to dst and returns the extended slice.
//
// Format (version 1): version byte, kind byte, uvarint ID, Time as 8 bytes
// little-endian, uvarint Session, uvarint AckedBelow, uvarint op count,
// then per op: uvarint Seq, type byte, compare byte, flags byte
// (DeleteOnSuccess, CompareValue present, CompareRevision present, Lease
// present, Prefix: set on an OpDelete only),
// uvarint-length-prefixed Key and Value, then the length-prefixed
// CompareValue and the uvarint CompareRevision when present, then, for an
// OpTxn, its transaction: the uvarint count of compares, each a target
// byte, an operator byte, the length-prefixed key and value and the
// uvarint number; then for Then and for Else the uvarint count of
// operations, each a type byte, the length-prefixed key, value and after
// and the uvarint limit. Ops are only
// encoded for CmdBatch. CmdTokenKey and CmdRevoke have no op count: after
// AckedBelow come, for CmdTokenKey, the uvarint key id and the
// length-prefixed secret; for CmdRevoke, the 16-byte token id and Expires
// as 8 bytes little-endian. The lease commands have no op count either:
// CmdLeaseGrant carries the uvarint TTL (nanoseconds) and the
// length-prefixed prefix, the others the uvarint count of ids, the
// uvarint ids and the length-prefixed prefix. An op with a lease sets the lease flag and carries the
// uvarint lease after its CompareRevision; a transaction operation with
// one sets the high bit of its type byte and carries it after its limit;
// a transaction delete of a prefix sets the next bit (0x40) of its type
// byte.
func (c *Command) AppendBinary(dst []byte) []byte {
	dst = append(dst, commandVersion, byte(c.Kind))
	dst = binary.AppendUvarint(dst, c.ID)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(c.Time))
	dst = binary.AppendUvarint(dst, c.Session)
	dst = binary.AppendUvarint(dst, c.AckedBelow)
	switch c.Kind {
	case CmdBatch:
	case CmdTokenKey:
		dst = binary.AppendUvarint(dst, c.TokenKey.ID)
		dst = binary.AppendUvarint(dst, uint64(len(c.TokenKey.Secret)))
		return append(dst, c.TokenKey.Secret...)
	case CmdRevoke:
		dst = append(dst, c.Revoke.ID[:]...)
		return binary.LittleEndian.AppendUint64(dst, uint64(c.Revoke.Expires))
	case CmdLeaseGrant, CmdLeaseRevoke, CmdLeaseKeepAlive, CmdLeaseExpire:
		return appendLeaseCommand(dst, c.Kind, &c.Lease)
	default:
		return append(dst, 0)
	}
	dst = binary.AppendUvarint(dst, uint64(len(c.Ops)))
	for i := range c.Ops {
		op := &c.Ops[i]
		var flags byte
		if op.DeleteOnSuccess {
			flags |= opFlagDeleteOnSuccess
		}
		if len(op.CompareValue) > 0 {
			flags |= opFlagCompareValue
		}
		if op.CompareRevision != 0 {
			flags |= opFlagCompareRevision
		}
		if op.Lease != 0 {
			flags |= opFlagLease
		}
		if op.Prefix {
			flags |= opFlagPrefix
		}
		dst = binary.AppendUvarint(dst, op.Seq)
		dst = append(dst, byte(op.Type), byte(op.Compare), flags)
		dst = binary.AppendUvarint(dst, uint64(len(op.Key)))
		dst = append(dst, op.Key...)
		dst = binary.AppendUvarint(dst, uint64(len(op.Value)))
		dst = append(dst, op.Value...)
		if flags&opFlagCompareValue != 0 {
			dst = binary.AppendUvarint(dst, uint64(len(op.CompareValue)))
			dst = append(dst, op.CompareValue...)
		}
		if flags&opFlagCompareRevision != 0 {
			dst = binary.AppendUvarint(dst, op.CompareRevision)
		}
		if flags&opFlagLease != 0 {
			dst = binary.AppendUvarint(dst, op.Lease)
		}
		if op.Type == OpTxn {
			dst = appendTxn(dst, op.Txn)
		}
	}
	return dst
}

// DecodeCommand decodes a Command encoded by AppendBinary (of a command
// with a valid Kind). It never panics, and errors wrap ErrMalformed. The
// encoding is canonical: re-encoding a decoded command gives back b.
//
// The result aliases b: the ops' Key, Value and CompareValue and the
// TokenKey's Secret are sub-slices of b (with their capacity capped at
// their length), so b must not be modified while the Command is in use.
func DecodeCommand(b []byte) (Command, error) {
	var c Command
	err := decodeCommand(&c, b, nil)
	return c, err
}

// decoder reads a byte slice, remembering the first error.
type decoder struct {
	b   []byte
	off int
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w command: at byte %d: %s", ErrMalformed, d.off, fmt.Sprintf(format, args...))
	}
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if d.off >= len(d.b) {
		d.fail("truncated")
		return 0
	}
	v := d.b[d.off]
	d.off++
	return v
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	// Fast path: one byte.
	if d.off < len(d.b) && d.b[d.off] < 0x80 {
		v := d.b[d.off]
		d.off++
		return uint64(v)
	}
	v, n := uvarint(d.b[d.off:])
	if n <= 0 {
		d.fail("bad uvarint")
		return 0
	}
	d.off += n
	return v
}

func (d *decoder) fixed64() uint64 {
	if d.err != nil {
		return 0
	}
	if len(d.b)-d.off < 8 {
		d.fail("truncated")
		return 0
	}
	v := binary.LittleEndian.Uint64(d.b[d.off:])
	d.off += 8
	return v
}

// array16 reads 16 bytes into v.
func (d *decoder) array16(v *[16]byte) {
	if d.err != nil {
		return
	}
	if len(d.b)-d.off < len(v) {
		d.fail("truncated")
		return
	}
	copy(v[:], d.b[d.off:])
	d.off += len(v)
}

// bytes returns the next length-prefixed byte string, aliasing d.b; nil
// when empty.
func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)-d.off) {
		d.fail("length %d over the %d bytes left", n, len(d.b)-d.off)
		return nil
	}
	if n == 0 {
		return nil
	}
	end := d.off + int(n)
	v := d.b[d.off:end:end]
	d.off = end
	return v
}

// uvarint decodes a minimally encoded uvarint; n <= 0 on a truncated,
// overflowing or non-minimal encoding.
func uvarint(b []byte) (uint64, int) {
	v, n := binary.Uvarint(b)
	if n > 1 && b[n-1] == 0 {
		return 0, -1
	}
	return v, n
}

// decodeCommand decodes b into c, reusing ops' storage for c.Ops.
func decodeCommand(c *Command, b []byte, ops []WriteOp) error {
	d := decoder{b: b}
	if v := d.byte(); d.err == nil && v != commandVersion {
		return fmt.Errorf("%w command: unknown format version %d", ErrMalformed, v)
	}
	c.Kind = CommandKind(d.byte())
	c.ID = d.uvarint()
	c.Time = int64(d.fixed64())
	c.Session = d.uvarint()
	c.AckedBelow = d.uvarint()
	c.TokenKey, c.Revoke, c.Lease = TokenKey{}, Revocation{}, LeaseCommand{}
	switch c.Kind {
	case CmdLeaseGrant, CmdLeaseRevoke, CmdLeaseKeepAlive, CmdLeaseExpire:
		c.Ops = ops[:0]
		d.leaseCommand(c.Kind, &c.Lease)
		return d.end()
	case CmdTokenKey, CmdRevoke:
		c.Ops = ops[:0]
		if c.Kind == CmdTokenKey {
			c.TokenKey.ID = d.uvarint()
			c.TokenKey.Secret = d.bytes()
		} else {
			d.array16(&c.Revoke.ID)
			c.Revoke.Expires = int64(d.fixed64())
		}
		return d.end()
	}
	n := d.uvarint()
	if d.err != nil {
		return d.err
	}
	switch c.Kind {
	case CmdBatch:
	case CmdOpenSession, CmdKeepAlive, CmdCloseSession:
		if n != 0 {
			return fmt.Errorf("%w command: %v with %d ops", ErrMalformed, c.Kind, n)
		}
	default:
		return fmt.Errorf("%w command: unknown kind %d", ErrMalformed, c.Kind)
	}
	if n > uint64((len(b)-d.off)/minOpSize) {
		return fmt.Errorf("%w command: %d ops cannot fit in %d bytes", ErrMalformed, n, len(b)-d.off)
	}
	if n == 0 {
		c.Ops = ops[:0]
	} else if uint64(cap(ops)) >= n {
		c.Ops = ops[:n]
	} else {
		c.Ops = make([]WriteOp, n)
	}
	for i := range c.Ops {
		op := &c.Ops[i]
		op.Seq = d.uvarint()
		op.Type = OpType(d.byte())
		op.Compare = CompareKind(d.byte())
		flags := d.byte()
		if flags&^opFlagsKnown != 0 {
			d.fail("unknown op flags %#x", flags)
		}
		op.DeleteOnSuccess = flags&opFlagDeleteOnSuccess != 0
		op.Prefix = flags&opFlagPrefix != 0
		if op.Prefix && op.Type != OpDelete {
			d.fail("prefix flag on a %v op", op.Type)
		}
		op.Key = d.bytes()
		op.Value = d.bytes()
		op.CompareValue = nil
		op.CompareRevision = 0
		if flags&opFlagCompareValue != 0 {
			op.CompareValue = d.bytes()
			if d.err == nil && op.CompareValue == nil {
				d.fail("empty compare value flagged present")
			}
		}
		if flags&opFlagCompareRevision != 0 {
			op.CompareRevision = d.uvarint()
			if d.err == nil && op.CompareRevision == 0 {
				d.fail("zero compare revision flagged present")
			}
		}
		op.Lease = 0
		if flags&opFlagLease != 0 {
			op.Lease = d.uvarint()
			if d.err == nil && op.Lease == 0 {
				d.fail("zero lease flagged present")
			}
		}
		op.Txn = nil // the ops may be reused
		if op.Type == OpTxn && d.err == nil {
			op.Txn = d.txn()
		}
		if d.err != nil {
			return d.err
		}
	}
	return d.end()
}

// end returns the first error, or an error if bytes are left over. It
// is small enough to inline into decodeCommand's hot path.
func (d *decoder) end() error {
	if d.err == nil && d.off != len(d.b) {
		d.trailing()
	}
	return d.err
}

func (d *decoder) trailing() {
	d.err = fmt.Errorf("%w command: %d trailing bytes", ErrMalformed, len(d.b)-d.off)
}
