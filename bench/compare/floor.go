package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Floor is what this machine allows a replicated operation at best, as
// issue 18 defines it: a put cannot be answered before one durable write
// (the followers' and the leader's run side by side) and two loopback
// round trips (client to leader, leader to follower); a linearizable get
// needs the two round trips (client to leader, the leader's heartbeat
// round) and no write. Every figure is in microseconds.
type Floor struct {
	System  string  `json:"system"` // always "floor": tells the line from a Result
	Samples int     `json:"samples"`
	FsyncUS float64 `json:"fsync_p50_us"` // a 4 KiB overwrite of a preallocated file + fdatasync
	RTTUS   float64 `json:"rtt_p50_us"`   // a 64-byte ping-pong over 127.0.0.1 TCP
	PutUS   float64 `json:"put_floor_us"` // FsyncUS + 2 RTTUS
	GetUS   float64 `json:"get_floor_us"` // 2 RTTUS + 50 (the allowance for the read's own work)
}

// getAllowanceUS is what the issue grants a linearizable get beyond its
// two round trips.
const getAllowanceUS = 50

// MeasureFloor measures the floor with samples of each kind: the durable
// writes in a file under dir (put it on the disk the nodes' data lives
// on), the round trips against an echo server of its own on 127.0.0.1.
func MeasureFloor(ctx context.Context, dir string, samples int) (Floor, error) {
	if samples < 1 {
		return Floor{}, errors.New("samples must be at least 1")
	}
	fsync, err := fsyncP50(ctx, dir, samples)
	if err != nil {
		return Floor{}, err
	}
	rtt, err := rttP50(ctx, samples)
	if err != nil {
		return Floor{}, err
	}
	return Floor{
		System: "floor", Samples: samples, FsyncUS: fsync, RTTUS: rtt,
		PutUS: fsync + 2*rtt, GetUS: 2*rtt + getAllowanceUS,
	}, nil
}

// fsyncP50 overwrites 4 KiB blocks of a file it first fills and syncs
// (as a WAL with preallocated segments does), one fdatasync each.
func fsyncP50(ctx context.Context, dir string, samples int) (float64, error) {
	f, err := os.CreateTemp(dir, "floor-*.tmp")
	if err != nil {
		return 0, fmt.Errorf("floor: a file to sync in %s: %w", dir, err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	const block = 4096
	blocks := samples
	if blocks > 1024 {
		blocks = 1024 // 4 MiB, written over and over
	}
	zero := make([]byte, block*blocks)
	if _, err := f.Write(zero); err != nil {
		return 0, fmt.Errorf("floor: fill %s: %w", f.Name(), err)
	}
	if err := f.Sync(); err != nil {
		return 0, fmt.Errorf("floor: sync %s: %w", f.Name(), err)
	}
	buf := make([]byte, block)
	took := make([]float64, 0, samples)
	for i := 0; i < samples && ctx.Err() == nil; i++ {
		buf[0] = byte(i)
		start := time.Now()
		if _, err := f.WriteAt(buf, int64(i%blocks)*block); err != nil {
			return 0, fmt.Errorf("floor: write %s: %w", filepath.Base(f.Name()), err)
		}
		if err := fdatasync(f); err != nil {
			return 0, fmt.Errorf("floor: fdatasync %s: %w", filepath.Base(f.Name()), err)
		}
		took = append(took, float64(time.Since(start).Nanoseconds())/1e3)
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	return median(took), nil
}

// rttP50 times 64-byte ping-pongs over one loopback TCP connection.
func rttP50(ctx context.Context, samples int) (float64, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("floor: listen on 127.0.0.1: %w", err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.Copy(c, c) // echo until the client hangs up
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return 0, fmt.Errorf("floor: dial the echo server: %w", err)
	}
	defer c.Close()
	if d, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(d)
	} else {
		_ = c.SetDeadline(time.Now().Add(time.Minute))
	}
	ping := make([]byte, 64)
	pong := make([]byte, 64)
	took := make([]float64, 0, samples)
	for i := 0; i < samples && ctx.Err() == nil; i++ {
		start := time.Now()
		if _, err := c.Write(ping); err != nil {
			return 0, fmt.Errorf("floor: ping: %w", err)
		}
		if _, err := io.ReadFull(c, pong); err != nil {
			return 0, fmt.Errorf("floor: pong: %w", err)
		}
		took = append(took, float64(time.Since(start).Nanoseconds())/1e3)
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	return median(took), nil
}
