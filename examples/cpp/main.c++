// capraft-example: a C++ client of a capraft node, built from the same
// schema/*.capnp the Go code is generated from (the schema is the
// contract). It watches a key, puts it, reads it back and prints all
// three; it exits 0 only if the node answered every call, the value read is
// the value written, and the watch delivered the put.
//
//   capraft-example [HOST:PORT [KEY [VALUE]]]
//
// The default address is the quickstart node's, 127.0.0.1:7000. A node
// started with no flags on loopback grants every connection a client's
// authority, so no credential is presented (see node.capnp).
//
// Every capability here is used before it is resolved: kv() is called on
// the bootstrap and the first KV call is sent at once, pipelined on the
// unanswered kv(), as the Go client does (client/client.go). Nothing waits
// for a capability, only for the answers it needs. The watch goes the other
// way: this program serves a Watcher capability that the node calls.

#include <capnp/ez-rpc.h>
#include <kj/async-io.h>
#include <kj/exception.h>
#include <kj/string.h>
#include <kj/timer.h>

#include <unistd.h>

#include <ctime>
#include <iostream>
#include <stdexcept>

#include "kv.capnp.h"
#include "node.capnp.h"

namespace {

// callTimeout bounds each wait: a node that accepts the connection but
// never answers (or never delivers the watch event) fails the program
// instead of hanging it.
constexpr kj::Duration callTimeout = 10 * kj::SECONDS;

// Failure is an error worth a non-zero exit: the node answered with an
// error, or with something other than what was written, or the watch
// missed the write.
struct Failure : std::runtime_error {
  explicit Failure(kj::String msg) : std::runtime_error(msg.cStr()) {}
};

// Conn is one connection to a node and the waits made on it.
struct Conn {
  capnp::EzRpcClient rpc;
  Node::Client node;

  explicit Conn(kj::StringPtr addr)
      : rpc(addr, 7000), node(rpc.getMain<Node>()) {}

  // wait blocks until promise resolves, at most callTimeout.
  template <typename T>
  T wait(kj::Promise<T>&& promise) {
    return rpc.getIoProvider()
        .getTimer()
        .timeoutAfter(callTimeout, kj::mv(promise))
        .wait(rpc.getWaitScope());
  }
};

kj::ArrayPtr<const kj::byte> bytes(kj::StringPtr s) { return s.asBytes(); }

kj::String text(capnp::Data::Reader d) {
  return kj::heapString(reinterpret_cast<const char*>(d.begin()), d.size());
}

// check fails with the node's error if result carries one, or if it is not
// the kind of result the operation gives.
void check(Result::Reader result, Result::Which want, kj::StringPtr what) {
  if (result.isError()) {
    auto e = result.getError();
    throw Failure(kj::str(what, ": ", e.getCode(), ": ", e.getMessage()));
  }
  if (result.which() != want) {
    throw Failure(kj::str(what, ": unexpected result ", result));
  }
}

// openSession registers a session through the log: writes are numbered in
// it, so a retried write is applied once (kv.capnp).
uint64_t openSession(Conn& c, KV::Client& kv) {
  auto res = c.wait(kv.openSessionRequest().send());
  if (res.hasError()) {
    auto e = res.getError();
    throw Failure(kj::str("openSession: ", e.getCode(), ": ", e.getMessage()));
  }
  if (res.getSession() == 0) {
    throw Failure(kj::str("openSession: the node returned session 0"));
  }
  return res.getSession();
}

// put writes key=value as the session's write number seq and returns the
// store's revision after it.
uint64_t put(Conn& c, KV::Client& kv, uint64_t session, uint64_t seq,
             kj::StringPtr key, kj::StringPtr value) {
  auto req = kv.putRequest();
  req.setSession(session);
  req.setSeq(seq);
  auto op = req.initOp();
  op.setKey(bytes(key));
  op.setValue(bytes(value));
  auto res = c.wait(req.send());
  auto result = res.getResult();
  check(result, Result::PUT, "put");
  return result.getRevision();
}

// get reads key (linearizable: it reflects every acknowledged write) in one
// round trip from the bootstrap: kv() and get() leave together, the get
// addressed to kv()'s answer before that answer exists. The key and value
// read live in the returned response.
capnp::Response<KV::GetResults> get(Conn& c, kj::StringPtr key) {
  auto req = c.node.kvRequest().send().getKv().getRequest();
  auto op = req.initOp();
  op.setKey(bytes(key));
  op.setConsistency(Consistency::LINEARIZABLE);
  auto res = c.wait(req.send());
  auto result = res.getResult();
  check(result, Result::GET, "get");
  if (!result.getGet().getFound()) {
    throw Failure(kj::str("get ", key, ": not found right after the put"));
  }
  return res;
}

// closeSession lets the node forget the session now rather than when its
// ttl runs out.
void closeSession(Conn& c, KV::Client& kv, uint64_t session) {
  auto req = kv.closeSessionRequest();
  req.setSession(session);
  auto res = c.wait(req.send());
  if (res.hasError()) {
    auto e = res.getError();
    throw Failure(kj::str("closeSession: ", e.getCode(), ": ", e.getMessage()));
  }
}

// KeyWatcher is the Watcher capability this program serves: the node
// calls it back over the same connection. It prints each batch of events
// and fulfils a promise once the watch is up to date with the put's
// revision (an events call, or a progress notification, whose upTo
// reaches it) and the put's event was among those delivered; it rejects
// it if the node closes the watch, or passes that revision without it.
class KeyWatcher final : public Watcher::Server {
 public:
  KeyWatcher(kj::StringPtr value, kj::Own<kj::PromiseFulfiller<void>> done)
      : value(value), done(kj::mv(done)) {}

  // expect names the revision to wait for, the put's. Its event may
  // already have arrived: the node can call events before the put's
  // answer reaches this program.
  void expect(uint64_t revision) {
    want = revision;
    settle();
  }

 protected:
  kj::Promise<void> events(EventsContext context) override {
    auto params = context.getParams();
    auto events = params.getEvents();
    upTo = params.getUpTo();
    if (events.size() == 0) {
      std::cout << "watch: progress, up to revision " << upTo << std::endl;
    } else {
      std::cout << "watch: " << events.size() << " event(s), up to revision " << upTo
                << std::endl;
    }
    for (auto e : events) {
      auto kv = e.getKv();
      if (e.getType() == EventType::PUT) {
        auto v = text(kv.getValue());
        std::cout << "watch:   put " << text(kv.getKey()).cStr() << " = " << v.cStr()
                  << " (modRevision " << kv.getModRevision() << ", createRevision "
                  << kv.getCreateRevision() << ", version " << kv.getVersion() << ")"
                  << std::endl;
        if (v == value) seenAt = kv.getModRevision();
      } else {
        std::cout << "watch:   delete " << text(kv.getKey()).cStr() << " (revision "
                  << kv.getModRevision() << ")" << std::endl;
      }
    }
    settle();
    return kj::READY_NOW;  // returning asks the node for the next batch
  }

  kj::Promise<void> closed(ClosedContext context) override {
    auto p = context.getParams();
    auto why = kj::str("closed by the node: ", p.getCode(), ": ", p.getReason(),
                       " (up to revision ", p.getUpTo(), ")");
    std::cout << "watch: " << why.cStr() << std::endl;
    if (done->isWaiting()) {
      done->reject(kj::Exception(kj::Exception::Type::FAILED, __FILE__, __LINE__, kj::mv(why)));
    }
    return kj::READY_NOW;
  }

 private:
  void settle() {
    if (want == 0 || upTo < want || !done->isWaiting()) return;
    if (seenAt == want) {
      done->fulfill();
    } else {
      done->reject(kj::Exception(kj::Exception::Type::FAILED, __FILE__, __LINE__,
                                 kj::str("the watch is up to revision ", upTo, " without it")));
    }
  }

  kj::StringPtr value;                     // the value the put writes
  kj::Own<kj::PromiseFulfiller<void>> done;
  uint64_t want = 0;    // the put's revision, once known
  uint64_t upTo = 0;    // the revision the watch is up to date with
  uint64_t seenAt = 0;  // the revision of the put's event, once delivered
};

int run(kj::StringPtr addr, kj::StringPtr key, kj::StringPtr value) {
  Conn c(addr);
  KV::Client kv = c.node.kvRequest().send().getKv();  // a promise: not waited for

  // Watch the key before writing it. fromRevision 0 starts after the
  // node's revision when the watch arrives, so the put waits for the
  // watch's answer (openSession travels meanwhile): the watch covers it.
  auto seen = kj::newPromiseAndFulfiller<void>();
  auto server = kj::heap<KeyWatcher>(value, kj::mv(seen.fulfiller));
  KeyWatcher& watcher = *server;  // lives while watcherCap does
  Watcher::Client watcherCap = kj::mv(server);
  auto wreq = kv.watchRequest();
  auto spec = wreq.initReq();
  spec.setPrefix(bytes(key));
  spec.setExact(true);
  spec.setProgressMillis(1000);  // a quiet key still hears the revision move on
  wreq.setWatcher(watcherCap);
  auto watching = wreq.send();

  uint64_t session = openSession(c, kv);
  auto w = c.wait(kj::mv(watching));
  if (w.hasError()) {
    auto e = w.getError();
    throw Failure(kj::str("watch: ", e.getCode(), ": ", e.getMessage()));
  }
  Subscription::Client handle = w.getHandle();
  std::cout << "watch " << key.cStr() << " from revision " << w.getStartRevision() << std::endl;

  uint64_t rev = put(c, kv, session, 1, key, value);
  std::cout << "put " << key.cStr() << " = " << value.cStr() << " at revision " << rev
            << std::endl;
  watcher.expect(rev);

  auto res = get(c, key);
  auto got = res.getResult().getGet().getKv();
  auto gotValue = text(got.getValue());
  std::cout << "get " << text(got.getKey()).cStr() << " = " << gotValue.cStr()
            << " (modRevision " << got.getModRevision() << ", version "
            << got.getVersion() << ")" << std::endl;

  try {
    c.wait(kj::mv(seen.promise));
  } catch (const kj::Exception& e) {  // closed, a lost event, or the timeout
    throw Failure(kj::str("watch: no event for the put at revision ", rev, ": ",
                          e.getDescription()));
  }
  std::cout << "watch saw the put at revision " << rev << std::endl;
  // cancel returns once the node makes no more events calls; dropping the
  // handle would end the watch too, without saying when.
  c.wait(handle.cancelRequest().send());

  closeSession(c, kv, session);

  if (got.getValue() != capnp::Data::Reader(bytes(value))) {
    throw Failure(kj::str("get returned \"", gotValue, "\", put wrote \"", value, "\""));
  }
  if (got.getModRevision() < rev) {
    throw Failure(kj::str("get returned modRevision ", got.getModRevision(),
                          ", older than the put's revision ", rev));
  }
  return 0;
}

}  // namespace

int main(int argc, char* argv[]) {
  if (argc > 4 || (argc > 1 && (kj::StringPtr(argv[1]) == "-h" ||
                                kj::StringPtr(argv[1]) == "--help"))) {
    std::cerr << "usage: " << argv[0] << " [HOST:PORT [KEY [VALUE]]]\n"
              << "watches KEY on a capraft node (default 127.0.0.1:7000), puts KEY=VALUE, "
                 "gets it back, waits for the watch event; exits 1 on any error or mismatch"
              << std::endl;
    return 2;
  }
  kj::StringPtr addr = argc > 1 ? argv[1] : "127.0.0.1:7000";
  kj::StringPtr key = argc > 2 ? argv[2] : "examples/cpp/greeting";
  // The default value names this run, so a value left by an earlier run
  // cannot pass for this one's.
  kj::String value = argc > 3 ? kj::heapString(argv[3])
                              : kj::str("hello from C++ (pid ", getpid(), " at ", time(nullptr), ")");
  try {
    return run(addr, key, value);
  } catch (const Failure& f) {
    std::cerr << "capraft-example: " << f.what() << std::endl;
  } catch (const kj::Exception& e) {
    // Connection refused, a timeout, or an exception the node raised (such
    // as "permissionDenied: ..." when the node needs a credential).
    std::cerr << "capraft-example: " << addr.cStr() << ": " << e.getDescription().cStr()
              << std::endl;
  }
  return 1;
}
