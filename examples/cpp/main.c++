// capraft-example: a C++ client of a capraft node, built from the same
// schema/*.capnp the Go code is generated from (the schema is the
// contract). It puts a key, reads it back and prints both; it exits 0 only
// if the node answered every call and the value read is the value written.
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
// for a capability, only for the answers it needs.

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
// never answers fails the program instead of hanging it.
constexpr kj::Duration callTimeout = 10 * kj::SECONDS;

// Failure is an error worth a non-zero exit: the node answered with an
// error, or with something other than what was written.
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

// Watch goes here once KV.watch is in kv.capnp: a class implementing
// Watcher::Server that prints each batch of events and fulfils a promise
// when it sees the put's revision, handed to kv.watchRequest() (a
// capability argument: the node calls back into this program over the same
// connection). main then calls watch() before put(), and waits for that
// promise after it. build.sh compiles every schema/*.capnp, so it needs no
// change.

int run(kj::StringPtr addr, kj::StringPtr key, kj::StringPtr value) {
  Conn c(addr);
  KV::Client kv = c.node.kvRequest().send().getKv();  // a promise: not waited for

  uint64_t session = openSession(c, kv);
  uint64_t rev = put(c, kv, session, 1, key, value);
  std::cout << "put " << key.cStr() << " = " << value.cStr() << " at revision " << rev
            << std::endl;

  auto res = get(c, key);
  auto got = res.getResult().getGet().getKv();
  auto gotValue = text(got.getValue());
  std::cout << "get " << text(got.getKey()).cStr() << " = " << gotValue.cStr()
            << " (modRevision " << got.getModRevision() << ", version "
            << got.getVersion() << ")" << std::endl;

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
              << "puts KEY=VALUE on a capraft node (default 127.0.0.1:7000), gets it back, "
                 "exits 1 on any error or mismatch"
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
