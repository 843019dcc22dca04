@0xbe14731e5049ac43;
# Subscription: the handle a subscriber holds for a stream the node pushes
# to it (echo messages today, key-value watches later).

using Go = import "/go.capnp";
$Go.package("schema");
$Go.import("github.com/capraft/capraft/schema");

interface Subscription {
  # Releasing the capability (or disconnecting) ends the subscription as
  # well; cancel is for subscribers that want to end it explicitly and know
  # when the node has stopped delivering.
  cancel @0 () -> ();
}
