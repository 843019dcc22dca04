// Package concurrency builds distributed locks and leader election on a
// capraft cluster, from leases, revisions, transactions and watches, in
// the shape etcd's clientv3/concurrency users know.
//
//	s, err := concurrency.NewSession(ctx, c, concurrency.WithTTL(10*time.Second))
//	defer s.Close(context.Background())
//	m := concurrency.NewMutex(s, "locks/db")
//	if err := m.Lock(ctx); err != nil { ... }
//	token := m.Revision() // pass it to what the lock guards
//	...
//	err = m.Unlock(ctx)
//
// # Sessions
//
// A Session is a lease the client keeps alive. Every key a lock or an
// election writes is attached to it, so when the process dies, or is cut
// off for longer than the TTL, the cluster deletes its keys through the
// log (see client.Grant) and whatever it held passes on. Done is closed
// when the session ends: the lease could not be renewed in time, was
// revoked or expired, or the session was closed.
//
// # Queues
//
// A Mutex and an Election named N are a queue of keys under the prefix
// N + "/": one key per session (N/<lease id in hex>), ordered by the
// revision that created it. The session whose key has the lowest create
// revision holds the lock (leads). A session joins the queue with one
// transaction that creates its key if absent (and otherwise finds it
// again: a retried or resumed Lock never queues twice) and reads the
// queue. It then waits for the key just before its own to be deleted,
// watching that key only, so a release wakes one waiter, not all of them,
// and waiters are served in the order they joined. A waiter whose
// predecessor left the queue early (it gave up, or its session ended)
// reads the queue again and waits for the next key before it.
//
// # Fencing
//
// A lock holder can be paused (a long GC, a swapped-out VM, a partition)
// past its session's TTL; the cluster then deletes its key and the next
// waiter takes the lock while the paused one still believes it holds it.
// No lock service can prevent that. Revision is the defence: the create
// revision of the holder's key, which is larger for every later holder
// than for every earlier one. Pass it with every write to the guarded
// resource, and have the resource refuse a token lower than the highest
// it has seen. For writes to the cluster itself, put IsOwner in the
// transaction's comparisons: the write then happens only while the key
// is still the one that won the lock.
//
// # Failures
//
// Every step is an ordinary client call, retried by the client across
// leader changes and reconnects to other nodes; the key is the session's,
// so a step whose outcome was unknown is found again by the next one. A
// Lock or Campaign that fails (its context ended, the session was lost)
// leaves the queue: its key is deleted at once, or in the background
// until the session ends, so an abandoned waiter never blocks those
// behind it.
package concurrency
