package raft

// Simulated network: delivery with loss, duplication, delay and partitions.

func (c *simCluster) send(m Message) {
	if m.Type == MsgVote && m.Transfer {
		c.transferVotes++
	}
	c.msgCount++
	c.byType[m.Type]++
	c.payloadBytes += payloadSize(m.Entries)
	if from := c.nodes[m.From]; from == nil || !from.up {
		return
	}
	if m.Type == MsgSnap {
		c.startTransfer(m) // beside the core, not as a message
		return
	}
	if c.lossy && c.rng.Float64() < c.opts.dropP {
		return
	}
	delay := 0
	if c.lossy && c.opts.maxDelay > 0 {
		delay = c.rng.IntN(c.opts.maxDelay + 1)
	}
	c.queue = append(c.queue, inflightMsg{m: m, at: c.now + delay})
	if c.lossy && c.rng.Float64() < c.opts.dupP {
		c.queue = append(c.queue, inflightMsg{m: m, at: c.now + c.rng.IntN(c.opts.maxDelay+2)})
	}
}

func (c *simCluster) deliver() {
	var due []Message
	rest := c.queue[:0]
	for _, im := range c.queue {
		if im.at <= c.now {
			due = append(due, im.m)
		} else {
			rest = append(rest, im)
		}
	}
	c.queue = rest
	c.rng.Shuffle(len(due), func(i, j int) { due[i], due[j] = due[j], due[i] })
	for _, m := range due {
		to := c.nodes[m.To]
		if to == nil || !to.up || c.cut[[2]uint64{m.From, m.To}] {
			// Sometimes the transport notices and tells the leader.
			if m.Type == MsgApp && c.rng.IntN(4) == 0 {
				if from := c.nodes[m.From]; from != nil && from.up {
					from.core.ReportUnreachable(m.To)
				}
			}
			continue
		}
		c.heard.count(to.core.Step(m))
		c.process(to)
	}
}

func (c *simCluster) changePartition() {
	ids := c.sortedIDs()
	clear(c.cut)
	switch c.rng.IntN(5) {
	case 0: // heal
	case 1: // isolate the leader
		if l := c.leader(); l != nil {
			for _, id := range ids {
				c.cut[[2]uint64{l.id, id}] = true
				c.cut[[2]uint64{id, l.id}] = true
			}
		}
	case 2: // random symmetric split
		for _, a := range ids {
			for _, b := range ids {
				if a < b && (a+b+uint64(c.now))%2 == 0 && c.rng.IntN(2) == 0 {
					c.cut[[2]uint64{a, b}] = true
					c.cut[[2]uint64{b, a}] = true
				}
			}
		}
	case 3: // asymmetric: someone can send but not receive
		victim := ids[c.rng.IntN(len(ids))]
		for _, id := range ids {
			c.cut[[2]uint64{id, victim}] = true
		}
	case 4: // bridge: two halves that only one node connects
		bridge := ids[c.rng.IntN(len(ids))]
		for i, a := range ids {
			for j, b := range ids {
				if a != bridge && b != bridge && i%2 != j%2 {
					c.cut[[2]uint64{a, b}] = true
				}
			}
		}
	}
}

func (c *simCluster) countMsgs(t MessageType) int { return c.byType[t] }

// deliverEarly hands up to k queued messages for n to it right away (no
// matter their delay), while n has a Ready outstanding.
func (c *simCluster) deliverEarly(n *simNode, k int) {
	rest := c.queue[:0]
	for _, im := range c.queue {
		if k > 0 && im.m.To == n.id && !c.cut[[2]uint64{im.m.From, im.m.To}] {
			k--
			c.heard.count(n.core.Step(im.m))
			continue
		}
		rest = append(rest, im)
	}
	c.queue = rest
}
