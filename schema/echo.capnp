@0x92cff75502ac5d13;
# Echo: the connectivity probe and the multi-echo broadcast.

using Go = import "/go.capnp";
$Go.package("schema");
$Go.import("github.com/capraft/capraft/schema");

using import "subscription.capnp".Subscription;

interface Echo {
  # ping answers "echo:" ++ msg. The message is also delivered to every
  # listener subscribed on the node that received it.
  ping @0 (msg :Text) -> (reply :Text);

  # subscribe delivers every message pinged to this node from now on to
  # listener, in the order the node received them, until the subscription
  # is cancelled or released, or its client disconnects. Each listener has
  # a bounded queue on the node: a listener that falls too far behind is
  # dropped and told why through EchoListener.closed.
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
  # batched into the next call.
  messages @0 (messages :List(EchoMessage)) -> ();

  # closed is the node's last call: it ends the subscription and says why
  # (for example "listener dropped: 1024 messages behind"). It is not sent
  # when the subscriber itself cancelled or disconnected.
  closed @1 (reason :Text) -> ();
}
