// Checks of the C++ client's recovery paths against a real `simharmon serve --engine identity
// --identity-delay-ms 1500` (run by tests/bridge/test_cpp_client.py). Exit 0 when the check holds.
//
//   client_checks ENDPOINT restart    a client restarted with the same fixed routing id ignores the
//                                     dead client's late reply (session nonce) and gets its own
//   client_checks ENDPOINT late-slot  a shared-memory frame that timed out keeps its slot until its
//                                     late reply arrives, then the slot is free again
//   client_checks ENDPOINT resend     after `bye` the server has no segment: the slot frame is
//                                     answered SHM_NOT_ATTACHED, resent inline, and the next frame
//                                     offers a new segment
#include <simharmon/client.hpp>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr std::uint32_t kSize = 16;
int failures = 0;

void expect(bool ok, const std::string& what) {
  if (!ok) {
    std::fprintf(stderr, "client_checks: FAIL %s\n", what.c_str());
    ++failures;
  }
}

simharmon::Frame frame(const std::vector<std::uint8_t>& pixels) {
  simharmon::Frame f;
  f.camera = "front";
  f.width = f.height = kSize;
  f.pixels = pixels.data();
  return f;
}

bool same(const simharmon::Reply& r, const std::vector<std::uint8_t>& pixels) {
  return r.ok() && r.size() == pixels.size() && std::memcmp(r.data(), pixels.data(), pixels.size()) == 0;
}

void restart(const std::string& endpoint) {
  simharmon::ClientOptions o;
  o.routing_id = "cpp-fixed-id";
  const std::vector<std::uint8_t> dead_pixels(kSize * kSize * 3, 10), live_pixels(kSize * kSize * 3, 200);
  std::uint64_t dead_session = 0;
  {
    simharmon::Client dead(endpoint, o);
    dead_session = dead.session();
    dead.submit(frame(dead_pixels));
    std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the frame is in the engine now
  }  // the process "dies"; its frame is answered later, to whoever holds the routing id
  simharmon::Client live(endpoint, o);
  expect(live.session() != dead_session, "a new client draws a new session");
  const auto r = live.enhance(frame(live_pixels));
  expect(same(r, live_pixels), "the restarted client got its own image (code '" + r.code + "')");
  expect(live.foreign_replies() == 1, "the dead client's late reply arrived and was discarded, foreign_replies=" +
                                          std::to_string(live.foreign_replies()));
}

void late_slot(const std::string& endpoint) {
  simharmon::ClientOptions o;
  o.shared_memory = true;
  o.timeout_ms = 500;  // shorter than the server's delay
  simharmon::Client client(endpoint, o);
  const std::vector<std::uint8_t> pixels(kSize * kSize * 3, 77);
  const auto r = client.enhance(frame(pixels));
  expect(client.shm_active(), "shared memory accepted: " + client.shm_reason());
  expect(r.kind == simharmon::Reply::Kind::timeout, "the slow frame timed out locally");
  expect(client.shm_busy_slots() == 1, "its slot stays reserved: busy=" + std::to_string(client.shm_busy_slots()));
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));  // the late reply arrives meanwhile
  client.next_result(0);  // take what arrived
  expect(client.late_replies() == 1, "the late reply was recognised");
  expect(client.shm_busy_slots() == 0, "and freed the slot: busy=" + std::to_string(client.shm_busy_slots()));
}

void resend(const std::string& endpoint) {
  simharmon::ClientOptions o;
  o.shared_memory = true;
  simharmon::Client client(endpoint, o);
  const std::vector<std::uint8_t> pixels(kSize * kSize * 3, 99);
  auto r = client.enhance(frame(pixels));
  expect(same(r, pixels) && r.via_shm, "first frame through shared memory");
  client.bye();  // the server detaches the segment
  r = client.enhance(frame(pixels));
  expect(same(r, pixels) && !r.via_shm, "the frame the server could not read was resent inline (code '" + r.code + "')");
  expect(client.shm_resent() == 1, "one frame resent");
  r = client.enhance(frame(pixels));
  expect(same(r, pixels) && r.via_shm && client.shm_active(), "the next frame offered a new segment");
  expect(client.shm_busy_slots() == 0, "no slot left busy");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s ENDPOINT restart|late-slot|resend\n", argv[0]);
    return 2;
  }
  const std::string endpoint = argv[1], check = argv[2];
  try {
    if (check == "restart") restart(endpoint);
    else if (check == "late-slot") late_slot(endpoint);
    else if (check == "resend") resend(endpoint);
    else {
      std::fprintf(stderr, "unknown check %s\n", check.c_str());
      return 2;
    }
  } catch (const std::exception& e) {
    expect(false, std::string("exception: ") + e.what());
  }
  if (failures == 0) std::printf("client_checks: OK %s\n", check.c_str());
  return failures == 0 ? 0 : 1;
}
