@0x92cff75502ac5d13;
# Echo: the connectivity probe and the multi-echo broadcast.

using Go = import "/go.capnp";
$Go.package("schema");
$Go.import("github.com/capraft/capraft/schema");

using import "subscription.capnp".Subscription;

interface Echo {
  # ping answers "echo:" ++ msg. The message is also delivered to every
  # listener subscribed on the node that received it. A msg longer than
  # the node's limit for echo messages (1 MiB by default) is refused with
  # an error that names the limit, and delivered to nobody.
  ping @0 (msg :Text) -> (reply :Text);

  # subscribe delivers every message pinged to this node from now on to
  # listener, in the order the node received them, until the subscription
  # is cancelled or released, or its client disconnects. Each listener has
  # a queue on the node bounded in messages and in bytes (8 MiB of
  # undelivered messages by default), and all listeners together are
  # bounded in bytes (64 MiB by default). A listener that falls too far
  # behind, or is the furthest behind when the node's echo buffers are
  # full, is dropped and told why through EchoListener.closed.
  subscribe @1 (listener :EchoListener) -> (subscription :Subscription);
}

struct EchoMessage {
  seq @0 :UInt64;
  # Position of the message in the node's receive order, starting at 1.
  # Consecutive deliveries to one listener have consecutive seq values.

  msg @1 :Text;
}

interface EchoListener {
  # messages carries one or more messages, oldest first. The node sends
  # the next batch only after this call returns, so a listener is never
  # flooded with concurrent calls; messages that arrive meanwhile are
  # batched into the next call (about 1 MiB of them at most, or a single
  # larger message).
  messages @0 (messages :List(EchoMessage)) -> ();

  # closed is the node's last call: it ends the subscription and says why
  # (for example "listener dropped: it fell 8388640 bytes behind (limit
  # 8388608 bytes); resubscribe to continue"). It is not sent
  # when the subscriber itself cancelled or disconnected.
  closed @1 (reason :Text) -> ();
}
