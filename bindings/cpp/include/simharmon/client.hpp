// simharmon bridge client: header-only C++17, cppzmq + msgpack-cxx.
//
// Speaks protocol version 2 of docs/PROTOCOL.md to `simharmon serve` over a DEALER socket.
// Every call is bounded by ClientOptions::timeout_ms. Replies are matched to requests by `seq`
// and by this client's random session nonce, so late replies (after a timeout, a server restart,
// or meant for an earlier process that used the same routing id) are recognised and discarded.
// ZeroMQ reconnects by itself; ZMQ_IMMEDIATE keeps frames from queueing while no server is
// connected. With ClientOptions::shared_memory (POSIX, same host), frames and results travel
// through slots of a shared-memory segment and only headers cross the socket (§9); a server that
// refuses gets inline frames as usual.
//
// Not thread-safe: use one Client per thread.
#pragma once

#include <msgpack.hpp>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "shm.hpp"

namespace simharmon {

inline constexpr int kProtocolVersion = 2;

enum class PixelFormat { rgb8, rgba8, bgra8, rgb16f, rgb32f };

inline const char* to_string(PixelFormat f) {
  switch (f) {
    case PixelFormat::rgb8: return "rgb8";
    case PixelFormat::rgba8: return "rgba8";
    case PixelFormat::bgra8: return "bgra8";
    case PixelFormat::rgb16f: return "rgb16f";
    case PixelFormat::rgb32f: return "rgb32f";
  }
  return "?";
}

inline std::optional<PixelFormat> parse_format(const std::string& name) {
  for (auto f : {PixelFormat::rgb8, PixelFormat::rgba8, PixelFormat::bgra8, PixelFormat::rgb16f, PixelFormat::rgb32f})
    if (name == to_string(f)) return f;
  return std::nullopt;
}

// Bytes per pixel of a packed, interleaved [H, W, C] buffer.
inline std::size_t bytes_per_pixel(PixelFormat f) {
  switch (f) {
    case PixelFormat::rgb8: return 3;
    case PixelFormat::rgba8:
    case PixelFormat::bgra8: return 4;
    case PixelFormat::rgb16f: return 6;
    case PixelFormat::rgb32f: return 12;
  }
  return 0;
}

// A frame to send. Buffers are borrowed: they must stay valid for the duration of submit()
// (or, with ClientOptions::zero_copy and inline sending, until the frame's reply arrives).
struct Frame {
  std::string camera = "cam0";
  std::uint64_t index = 0;         // echoed in the reply
  std::int64_t timestamp_us = 0;   // simulation time, echoed
  std::uint32_t width = 0, height = 0;
  PixelFormat format = PixelFormat::rgb8;
  const void* pixels = nullptr;    // width * height * bytes_per_pixel(format) bytes
  const std::uint8_t* mask = nullptr;  // optional [H, W] uint8: 0 scene, 255 inserted actor
  const float* depth = nullptr;        // optional [H, W] float32, metres (0 or +inf: no surface)
  const float* flow = nullptr;         // optional [H, W, 2] float32, pixels
  std::optional<std::array<double, 4>> intrinsics;  // fx, fy, cx, cy (pixels; fx, fy > 0)
  std::optional<std::array<double, 16>> pose;       // row-major 4x4 camera-to-world
  std::optional<PixelFormat> reply_format;          // default: same as format
  bool reset = false;                               // start a new history with this frame
  std::optional<double> max_age_ms;                 // let the server drop it when stale
};

struct Reply {
  enum class Kind { result, dropped, error, timeout };
  Kind kind = Kind::error;
  std::uint64_t seq = 0;
  std::string sim, camera;
  std::uint64_t frame = 0;
  std::int64_t timestamp_us = 0;
  std::uint32_t width = 0, height = 0;
  std::optional<PixelFormat> format;
  std::string code, message, reason;  // error: code + message; dropped: reason
  std::int64_t server_us = -1;        // time spent in the server
  double round_trip_ms = 0.0;         // measured by this client
  bool via_shm = false;               // the image came through a shared-memory slot (copied out)
  zmq::message_t pixels;              // result image, width * height * bytes_per_pixel(*format)

  bool ok() const { return kind == Kind::result; }
  const std::uint8_t* data() const { return static_cast<const std::uint8_t*>(pixels.data()); }
  std::size_t size() const { return pixels.size(); }
};

struct Welcome {
  std::string engine;
  bool stand_in = false, untrained = false;
  std::vector<std::int64_t> protocol_versions;
  std::vector<std::string> formats, layers, options;
  std::vector<std::string> inputs;  // what the enhancer reads: among mask, depth, flow, intrinsics, pose
  std::uint32_t pixel_multiple = 1, max_width = 0, max_height = 0, max_streams = 0;
  std::uint64_t max_message_bytes = 0;
  std::uint32_t heartbeat_interval_ms = 0, stream_idle_timeout_ms = 0;
  bool shm_accepted = false;  // only when the hello offered a segment
  std::string shm_reason;     // why it was refused

  bool reads(const std::string& input) const { return std::find(inputs.begin(), inputs.end(), input) != inputs.end(); }
};

struct ClientOptions {
  std::string sim = "sim";
  int timeout_ms = 5000;
  std::size_t max_in_flight = 8;
  bool zero_copy = false;  // true: send inline pixel buffers without copying them (keep them alive until the reply)
  int sndhwm = 16, rcvhwm = 64;
  int reconnect_ivl_ms = 100, reconnect_ivl_max_ms = 1000;
  int heartbeat_ivl_ms = 1000;
  std::string routing_id;        // empty: random. A fixed one keeps streams across reconnects; unique per live client
  bool shared_memory = false;    // offer a shared-memory segment (same-host servers, POSIX)
  std::size_t shm_slot_bytes = 0;  // 0: sized for the first frame (a larger frame offers a larger segment)
};

class Error : public std::runtime_error {
 public:
  Error(std::string code, const std::string& message)
      : std::runtime_error(code + ": " + message), code_(std::move(code)) {}
  const std::string& code() const { return code_; }

 private:
  std::string code_;
};

class Timeout : public Error {
 public:
  explicit Timeout(const std::string& message) : Error("TIMEOUT", message) {}
};

namespace detail {

using Clock = std::chrono::steady_clock;
using Packer = msgpack::packer<msgpack::sbuffer>;

// Reads typed fields out of a msgpack map, ignoring unknown keys (forward compatible).
class MapView {
 public:
  explicit MapView(const msgpack::object& obj) {
    if (obj.type != msgpack::type::MAP) throw Error("BAD_REPLY", "reply header is not a msgpack map");
    for (std::uint32_t i = 0; i < obj.via.map.size; ++i) {
      const auto& kv = obj.via.map.ptr[i];
      if (kv.key.type == msgpack::type::STR) fields_[kv.key.as<std::string>()] = &kv.val;  // last value wins
    }
  }
  const msgpack::object* find(const std::string& key) const {
    auto it = fields_.find(key);
    return it == fields_.end() ? nullptr : it->second;
  }
  std::string str(const std::string& key, const std::string& fallback = "") const {
    auto* v = find(key);
    return v && v->type == msgpack::type::STR ? v->as<std::string>() : fallback;
  }
  std::int64_t integer(const std::string& key, std::int64_t fallback = 0) const {
    auto* v = find(key);
    if (!v) return fallback;
    if (v->type == msgpack::type::POSITIVE_INTEGER) return static_cast<std::int64_t>(v->via.u64);
    if (v->type == msgpack::type::NEGATIVE_INTEGER) return v->via.i64;
    return fallback;
  }
  std::optional<std::uint64_t> uint(const std::string& key) const {
    auto* v = find(key);
    if (v && v->type == msgpack::type::POSITIVE_INTEGER) return v->via.u64;
    return std::nullopt;
  }
  std::uint64_t uinteger(const std::string& key, std::uint64_t fallback = 0) const { return uint(key).value_or(fallback); }
  bool boolean(const std::string& key, bool fallback = false) const {
    auto* v = find(key);
    return v && v->type == msgpack::type::BOOLEAN ? v->via.boolean : fallback;
  }
  std::vector<std::string> strings(const std::string& key) const {
    std::vector<std::string> out;
    auto* v = find(key);
    if (v && v->type == msgpack::type::ARRAY)
      for (std::uint32_t i = 0; i < v->via.array.size; ++i)
        if (v->via.array.ptr[i].type == msgpack::type::STR) out.push_back(v->via.array.ptr[i].as<std::string>());
    return out;
  }
  std::vector<std::int64_t> integers(const std::string& key) const {
    std::vector<std::int64_t> out;
    auto* v = find(key);
    if (v && v->type == msgpack::type::ARRAY)
      for (std::uint32_t i = 0; i < v->via.array.size; ++i)
        if (v->via.array.ptr[i].type == msgpack::type::POSITIVE_INTEGER)
          out.push_back(static_cast<std::int64_t>(v->via.array.ptr[i].via.u64));
    return out;
  }

 private:
  std::map<std::string, const msgpack::object*> fields_;
};

inline std::string random_routing_id() {
  std::random_device rd;
  std::string id = "sh-";
  for (int i = 0; i < 12; ++i) id.push_back(static_cast<char>('a' + rd() % 26));
  return id;  // never starts with a zero byte (ZeroMQ reserves those)
}

// A random 64-bit session nonce (random_device may be weak on some platforms: mix in the clock
// and an address, then a splitmix64 finalizer).
inline std::uint64_t random_session() {
  std::random_device rd;
  std::uint64_t x = (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
  x ^= static_cast<std::uint64_t>(std::chrono::high_resolution_clock::now().time_since_epoch().count());
  x ^= static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(&rd));
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

template <typename V>
void pack_kv(Packer& pk, const char* key, const V& value) {
  pk.pack(std::string(key));
  pk.pack(value);
}

}  // namespace detail

class Client {
 public:
  explicit Client(const std::string& endpoint, ClientOptions options = {})
      : options_(std::move(options)), endpoint_(endpoint), session_(detail::random_session()),
        socket_(context_, zmq::socket_type::dealer) {
    if (options_.timeout_ms <= 0) throw std::invalid_argument("timeout_ms must be positive");
    const std::string id = options_.routing_id.empty() ? detail::random_routing_id() : options_.routing_id;
    if (id.size() > 255 || id[0] == '\0') throw std::invalid_argument("routing_id must be 1..255 bytes, not starting with 0");
    socket_.set(zmq::sockopt::routing_id, zmq::const_buffer(id.data(), id.size()));
    socket_.set(zmq::sockopt::linger, 0);
    socket_.set(zmq::sockopt::immediate, 1);
    socket_.set(zmq::sockopt::sndhwm, options_.sndhwm);
    socket_.set(zmq::sockopt::rcvhwm, options_.rcvhwm);
    socket_.set(zmq::sockopt::sndtimeo, options_.timeout_ms);  // the first send waits for the connection (EAGAIN retry)
    socket_.set(zmq::sockopt::reconnect_ivl, options_.reconnect_ivl_ms);
    socket_.set(zmq::sockopt::reconnect_ivl_max, options_.reconnect_ivl_max_ms);
    socket_.set(zmq::sockopt::heartbeat_ivl, options_.heartbeat_ivl_ms);
    socket_.set(zmq::sockopt::heartbeat_timeout, 3 * options_.heartbeat_ivl_ms);
    socket_.set(zmq::sockopt::heartbeat_ttl, 3 * options_.heartbeat_ivl_ms);
    if (endpoint.rfind("tcp://[", 0) == 0) socket_.set(zmq::sockopt::ipv6, 1);
    shm_state_ = options_.shared_memory ? (SIMHARMON_HAS_SHM ? ShmState::fresh : ShmState::refused) : ShmState::off;
    if (options_.shared_memory && !SIMHARMON_HAS_SHM) shm_reason_ = "this platform has no POSIX shared memory";
    socket_.connect(endpoint);
  }

  ~Client() {
    try {  // best effort: release this client's streams (and segment) now instead of waiting for expiry
      msgpack::sbuffer buf;
      detail::Packer pk(buf);
      pk.pack_map(4);
      pack_common(pk, "bye", next_seq_++);
      socket_.set(zmq::sockopt::linger, 100);  // give the bye 100 ms to leave; never block longer
      (void)socket_.send(zmq::buffer(buf.data(), buf.size()), zmq::send_flags::dontwait);
    } catch (...) {
    }
  }

  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Introduce this client; returns the server's description and limits. With shared memory
  // requested and a slot size known (shm_slot_bytes, or made for a frame), also offers the segment.
  Welcome hello() {
    detail::Segment* offered = shm_state_ == ShmState::fresh ? segment_to_offer(options_.shm_slot_bytes) : nullptr;
    auto h = control("hello", nullptr, offered ? 1 : 0, [&](detail::Packer& pk) {
      pk.pack(std::string("shm"));
      pk.pack_map(4);
      detail::pack_kv(pk, "name", offered->name());
      detail::pack_kv(pk, "token", offered->token_hex());
      detail::pack_kv(pk, "slot_bytes", static_cast<std::uint64_t>(offered->slot_bytes()));
      detail::pack_kv(pk, "slots", static_cast<std::uint64_t>(offered->slots()));
    });
    detail::MapView m(h.get());
    Welcome w;
    w.engine = m.str("engine");
    w.stand_in = m.boolean("stand_in");
    w.untrained = m.boolean("untrained");
    w.protocol_versions = m.integers("protocol_versions");
    w.formats = m.strings("formats");
    w.layers = m.strings("layers");
    w.options = m.strings("options");
    w.inputs = m.strings("inputs");
    w.pixel_multiple = static_cast<std::uint32_t>(m.uinteger("pixel_multiple", 1));
    w.max_width = static_cast<std::uint32_t>(m.uinteger("max_width"));
    w.max_height = static_cast<std::uint32_t>(m.uinteger("max_height"));
    w.max_streams = static_cast<std::uint32_t>(m.uinteger("max_streams"));
    w.max_message_bytes = m.uinteger("max_message_bytes");
    w.heartbeat_interval_ms = static_cast<std::uint32_t>(m.uinteger("heartbeat_interval_ms"));
    w.stream_idle_timeout_ms = static_cast<std::uint32_t>(m.uinteger("stream_idle_timeout_ms"));
    if (offered != nullptr) {
      const msgpack::object* answer = m.find("shm");
      if (answer != nullptr && answer->type == msgpack::type::MAP) {
        detail::MapView a(*answer);
        w.shm_accepted = a.boolean("accepted");
        w.shm_reason = a.str("reason");
      } else {
        w.shm_reason = "the server does not support the shared-memory extension";
      }
      if (offered == current_) {
        if (w.shm_accepted) {
          shm_state_ = ShmState::active;
        } else {
          refuse_shm(w.shm_reason);
        }
      }
    }
    return w;
  }

  // Round trip in milliseconds; throws Timeout when the server does not answer.
  double heartbeat() {
    auto start = detail::Clock::now();
    control("heartbeat");
    return std::chrono::duration<double, std::milli>(detail::Clock::now() - start).count();
  }

  // The server's stats map, printed as text (msgpack's JSON-like rendering).
  std::string stats() {
    auto h = control("stats");
    detail::MapView m(h.get());
    std::ostringstream out;
    if (auto* s = m.find("stats")) out << *s;
    return out.str();
  }

  void reset(const std::string& camera) { control("reset", &camera); }

  // Release all of this client's streams on the server (and its shared-memory segment, which the
  // next slot frame then re-offers).
  void bye() { control("bye"); }

  // Send a frame without waiting; returns its seq. Throws Error("BUSY") when max_in_flight frames
  // are unanswered, std::invalid_argument for an inconsistent Frame, Timeout when it cannot be sent.
  std::uint64_t submit(const Frame& f) {
    if (pending_.size() + ready_.size() >= options_.max_in_flight)
      throw Error("BUSY", "max_in_flight frames already in flight; collect replies with next_result()");
    if (!f.pixels || f.width == 0 || f.height == 0) throw std::invalid_argument("frame needs pixels, width and height");
    const std::size_t px = static_cast<std::size_t>(f.width) * f.height;
    const std::uint64_t seq = next_seq_++;

    std::vector<std::string> layers;
    std::vector<const void*> buffers{f.pixels};
    std::vector<std::size_t> sizes{px * bytes_per_pixel(f.format)};
    auto add_layer = [&](const char* name, const void* data, std::size_t size) {
      if (data == nullptr) return;
      layers.emplace_back(name);
      buffers.push_back(data);
      sizes.push_back(size);
    };
    add_layer("mask", f.mask, px);
    add_layer("depth", f.depth, px * sizeof(float));
    add_layer("flow", f.flow, px * 2 * sizeof(float));
    std::size_t end = 0;
    const auto layout = detail::slot_layout(sizes, end);
    const std::size_t reply_bytes = px * bytes_per_pixel(f.reply_format.value_or(f.format));

    Pending pending{detail::Clock::now(), f.camera, f.index};
    msgpack::sbuffer inline_header = frame_header(f, seq, layers, nullptr, 0);
    if (auto taken = take_slot(std::max(end, reply_bytes))) {
      pending.segment = taken->first;
      pending.slot = taken->second;
      std::uint8_t* slot = pending.segment->slot(pending.slot);
      for (std::size_t i = 0; i < buffers.size(); ++i) std::memcpy(slot + layout[i].first, buffers[i], sizes[i]);
      msgpack::sbuffer header = frame_header(f, seq, layers, &pending.segment->name(), pending.slot);
      std::vector<zmq::message_t> parts;
      parts.emplace_back(header.data(), header.size());
      try {
        send(parts);
      } catch (...) {
        pending.segment->release(pending.slot);
        throw;
      }
      pending.inline_header.assign(inline_header.data(), inline_header.size());
      pending.layout = layout;
      ++shm_frames_;
    } else {
      std::vector<zmq::message_t> parts;
      parts.emplace_back(inline_header.data(), inline_header.size());
      for (std::size_t i = 0; i < buffers.size(); ++i) parts.push_back(payload(buffers[i], sizes[i]));
      send(parts);
    }
    pending_[seq] = std::move(pending);
    return seq;
  }

  // The next reply to a submitted frame, waiting up to timeout_ms (default: options.timeout_ms).
  // A frame unanswered for options.timeout_ms comes back as Kind::timeout. Returns nullopt only
  // when nothing is in flight or the wait ends first.
  std::optional<Reply> next_result(int timeout_ms = -1) {
    const auto deadline = detail::Clock::now() + std::chrono::milliseconds(timeout_ms < 0 ? options_.timeout_ms : timeout_ms);
    for (;;) {
      receive(0);
      expire_pending();
      if (!ready_.empty()) {
        Reply r = std::move(ready_.front());
        ready_.pop_front();
        return r;
      }
      if (pending_.empty()) return std::nullopt;
      const auto now = detail::Clock::now();
      if (now >= deadline) return std::nullopt;
      const auto oldest_deadline = pending_.begin()->second.sent + std::chrono::milliseconds(options_.timeout_ms);
      const auto wake = std::min(deadline, oldest_deadline);
      receive(static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(wake - now).count()) + 1);
    }
  }

  // Send a frame and wait for its reply (any kind; check reply.kind; an unanswered frame comes back
  // as Kind::timeout). Never waits past the timeout; throws Timeout if the frame cannot be sent.
  Reply enhance(const Frame& f) {
    const std::uint64_t seq = submit(f);
    const auto deadline = detail::Clock::now() + std::chrono::milliseconds(options_.timeout_ms);
    for (;;) {
      for (auto it = ready_.begin(); it != ready_.end(); ++it) {
        if (it->seq == seq) {
          Reply r = std::move(*it);
          ready_.erase(it);
          return r;
        }
      }
      const auto now = detail::Clock::now();
      if (now >= deadline) {
        auto p = pending_.find(seq);
        if (p == pending_.end()) return timeout_reply(seq, Pending{now, f.camera, f.index});
        Reply r = timeout_reply(seq, p->second);
        abandon(seq, p->second);
        pending_.erase(p);
        return r;
      }
      receive(static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count()) + 1);
    }
  }

  std::size_t in_flight() const { return pending_.size() + ready_.size(); }
  std::uint64_t late_replies() const { return late_replies_; }
  std::uint64_t foreign_replies() const { return foreign_replies_; }  // other sessions' (same routing id)
  std::uint64_t session() const { return session_; }
  bool shm_active() const { return shm_state_ == ShmState::active; }
  const std::string& shm_reason() const { return shm_reason_; }
  std::uint64_t shm_frames() const { return shm_frames_; }  // frames sent through a slot
  std::uint64_t shm_resent() const { return shm_resent_; }  // resent inline: the server had lost the segment
  std::size_t shm_busy_slots() const {  // in use by frames in flight, or held for late replies
    std::size_t busy = 0;
    for (const auto& s : segments_) busy += s->busy();
    return busy;
  }

 private:
  enum class ShmState { off, fresh, active, refused };

  struct Pending {
    detail::Clock::time_point sent;
    std::string camera;
    std::uint64_t frame;
    detail::Segment* segment = nullptr;  // through shared memory: the segment and slot
    std::size_t slot = 0;
    bool resent = false;
    std::string inline_header{};         // to resend inline if the server lost the segment
    std::vector<std::pair<std::size_t, std::size_t>> layout{};
  };

  void pack_common(detail::Packer& pk, const char* type, std::uint64_t seq) const {
    detail::pack_kv(pk, "version", kProtocolVersion);
    detail::pack_kv(pk, "type", type);
    detail::pack_kv(pk, "session", session_);
    detail::pack_kv(pk, "seq", seq);
  }

  msgpack::sbuffer frame_header(const Frame& f, std::uint64_t seq, const std::vector<std::string>& layers,
                                const std::string* shm_name, std::size_t slot) const {
    const std::uint32_t n_options = (f.reply_format ? 1u : 0u) + (f.reset ? 1u : 0u) + (f.max_age_ms ? 1u : 0u);
    const std::uint32_t n_fields = 11 + (layers.empty() ? 0 : 1) + (f.intrinsics ? 1 : 0) + (f.pose ? 1 : 0) +
                                   (n_options ? 1 : 0) + (shm_name ? 1 : 0);
    msgpack::sbuffer buf;
    detail::Packer pk(buf);
    pk.pack_map(n_fields);
    pack_common(pk, "frame", seq);
    detail::pack_kv(pk, "sim", options_.sim);
    detail::pack_kv(pk, "camera", f.camera);
    detail::pack_kv(pk, "frame", f.index);
    detail::pack_kv(pk, "timestamp_us", f.timestamp_us);
    detail::pack_kv(pk, "width", f.width);
    detail::pack_kv(pk, "height", f.height);
    detail::pack_kv(pk, "format", to_string(f.format));
    if (!layers.empty()) detail::pack_kv(pk, "layers", layers);
    if (f.intrinsics) detail::pack_kv(pk, "intrinsics", *f.intrinsics);
    if (f.pose) detail::pack_kv(pk, "pose", *f.pose);
    if (n_options) {
      pk.pack(std::string("options"));
      pk.pack_map(n_options);
      if (f.reply_format) detail::pack_kv(pk, "reply_format", to_string(*f.reply_format));
      if (f.reset) detail::pack_kv(pk, "reset", true);
      if (f.max_age_ms) detail::pack_kv(pk, "max_age_ms", *f.max_age_ms);
    }
    if (shm_name) {
      pk.pack(std::string("shm"));
      pk.pack_map(2);
      detail::pack_kv(pk, "name", *shm_name);
      detail::pack_kv(pk, "slot", static_cast<std::uint64_t>(slot));
    }
    return buf;
  }

  zmq::message_t payload(const void* data, std::size_t size) const {
    if (options_.zero_copy) return zmq::message_t(const_cast<void*>(data), size, nullptr, nullptr);
    return zmq::message_t(data, size);
  }

  void send(std::vector<zmq::message_t>& parts) {
    for (std::size_t i = 0; i < parts.size(); ++i) {
      auto flags = i + 1 < parts.size() ? zmq::send_flags::sndmore : zmq::send_flags::none;
      if (!socket_.send(parts[i], flags))  // empty result = EAGAIN after sndtimeo
        throw Timeout("could not send to " + endpoint_ + " within the timeout (server down or not reading)");
    }
  }

  msgpack::object_handle control(const char* type, const std::string* camera = nullptr, std::uint32_t n_extra = 0,
                                 const std::function<void(detail::Packer&)>& extra = {}) {
    const std::uint64_t seq = next_seq_++;
    msgpack::sbuffer buf;
    detail::Packer pk(buf);
    pk.pack_map(4 + (camera ? 2 : 0) + n_extra);
    pack_common(pk, type, seq);
    if (camera) {
      detail::pack_kv(pk, "sim", options_.sim);
      detail::pack_kv(pk, "camera", *camera);
    }
    if (n_extra) extra(pk);
    std::vector<zmq::message_t> parts;
    parts.emplace_back(buf.data(), buf.size());
    send(parts);
    waiting_control_ = seq;
    control_reply_.reset();
    const auto deadline = detail::Clock::now() + std::chrono::milliseconds(options_.timeout_ms);
    while (!control_reply_) {
      const auto now = detail::Clock::now();
      if (now >= deadline) {
        waiting_control_ = 0;
        throw Timeout(std::string("no ") + type + " reply from " + endpoint_ + " within the timeout");
      }
      receive(static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count()) + 1);
    }
    waiting_control_ = 0;
    msgpack::object_handle h = std::move(*control_reply_);
    control_reply_.reset();
    detail::MapView m(h.get());
    if (m.str("type") == "error") throw Error(m.str("code"), m.str("message"));
    return h;
  }

  // -- shared memory ------------------------------------------------------------------------------
  detail::Segment* segment_to_offer(std::size_t need) {
    if (current_ == nullptr) {
      const std::size_t slot_bytes = std::max(need, options_.shm_slot_bytes);
      if (slot_bytes == 0) return nullptr;  // sized by the first frame
      try {
        segments_.push_back(std::make_unique<detail::Segment>(
            std::min(std::max<std::size_t>(options_.max_in_flight, 1), detail::kShmMaxSlots), slot_bytes));
      } catch (const std::exception& e) {
        refuse_shm(std::string("could not create a shared-memory segment: ") + e.what());
        return nullptr;
      }
      current_ = segments_.back().get();
    }
    return current_;
  }

  // A free slot of at least `need` bytes (negotiating a segment first if needed), or nothing: inline.
  std::optional<std::pair<detail::Segment*, std::size_t>> take_slot(std::size_t need) {
    if (shm_state_ == ShmState::off || shm_state_ == ShmState::refused) return std::nullopt;
    if (current_ != nullptr && current_->slot_bytes() < need) retire_segment();  // larger frame: larger segment
    if (shm_state_ == ShmState::fresh) {
      if (segment_to_offer(need) == nullptr) return std::nullopt;
      hello();
    }
    if (shm_state_ != ShmState::active || current_ == nullptr) return std::nullopt;
    const long slot = current_->acquire();
    if (slot < 0) return std::nullopt;  // all slots busy: inline
    return std::make_pair(current_, static_cast<std::size_t>(slot));
  }

  // Stop using the current segment (destroyed once its slots are answered); offer a new one next.
  void retire_segment() {
    current_ = nullptr;
    if (shm_state_ == ShmState::active) shm_state_ = ShmState::fresh;
    collect_segments();
  }

  void refuse_shm(const std::string& reason) {
    retire_segment();
    shm_state_ = ShmState::refused;
    shm_reason_ = reason;
  }

  void collect_segments() {
    segments_.erase(std::remove_if(segments_.begin(), segments_.end(),
                                   [&](const std::unique_ptr<detail::Segment>& s) {
                                     return s.get() != current_ && s->idle();
                                   }),
                    segments_.end());
  }

  // A frame timed out: a slow server may still write its slot, so keep the slot until its late reply.
  void abandon(std::uint64_t seq, const Pending& p) {
    if (p.segment != nullptr) quarantine_[seq] = {p.segment, p.slot};
  }

  // The server lost the segment (restart, expiry): resend the frame inline from its slot, same seq.
  bool resend_inline(Pending& p) {
    std::vector<zmq::message_t> parts;
    parts.emplace_back(p.inline_header.data(), p.inline_header.size());
    const std::uint8_t* slot = p.segment->slot(p.slot);
    for (const auto& [offset, size] : p.layout) parts.emplace_back(slot + offset, size);
    for (std::size_t i = 0; i < parts.size(); ++i) {
      auto flags = zmq::send_flags::dontwait | (i + 1 < parts.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
      if (!socket_.send(parts[i], flags)) return false;
    }
    if (p.segment == current_) retire_segment();  // re-offer a new segment with the next frame
    p.segment->release(p.slot);
    p.segment = nullptr;
    p.resent = true;
    ++shm_resent_;
    collect_segments();
    return true;
  }

  // -- receiving ----------------------------------------------------------------------------------
  // Wait up to timeout_ms for a message, then take everything already waiting.
  void receive(int timeout_ms) {
    zmq::pollitem_t item{static_cast<void*>(socket_), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, std::chrono::milliseconds(std::max(timeout_ms, 0))) <= 0) return;
    for (;;) {
      std::vector<zmq::message_t> parts;
      if (!zmq::recv_multipart(socket_, std::back_inserter(parts), zmq::recv_flags::dontwait)) return;
      accept(parts);
    }
  }

  void accept(std::vector<zmq::message_t>& parts) {
    msgpack::object_handle h;
    std::uint64_t seq = 0;
    std::string type, code;
    bool ours = false;
    try {
      h = msgpack::unpack(static_cast<const char*>(parts[0].data()), parts[0].size());
      detail::MapView m(h.get());
      seq = m.uinteger("seq");
      type = m.str("type");
      code = m.str("code");
      const auto session = m.uint("session");
      // A version-1-only server refuses us without echoing the session: match that by seq alone.
      ours = session ? *session == session_ : (type == "error" && code == "UNSUPPORTED_VERSION");
    } catch (const std::exception&) {
      ++late_replies_;  // unreadable: nothing to match it to
      return;
    }
    if (!ours) {
      ++foreign_replies_;  // to another process (or socket) that used this routing id
      return;
    }
    if (waiting_control_ != 0 && seq == waiting_control_) {
      control_reply_ = std::move(h);
      return;
    }
    auto p = pending_.find(seq);
    if (p == pending_.end()) {  // reply to a request that already timed out
      ++late_replies_;
      auto q = quarantine_.find(seq);
      if (q != quarantine_.end()) {  // the server is done with that slot now
        q->second.first->release(q->second.second);
        quarantine_.erase(q);
        collect_segments();
      }
      return;
    }
    if (p->second.segment != nullptr && code == "SHM_NOT_ATTACHED" && !p->second.resent && resend_inline(p->second))
      return;  // still pending, now inline
    Reply r = parse_frame_reply(h, parts, p->second);
    r.round_trip_ms = std::chrono::duration<double, std::milli>(detail::Clock::now() - p->second.sent).count();
    if (p->second.segment != nullptr) {
      p->second.segment->release(p->second.slot);  // copied out, or never written
      collect_segments();
    }
    pending_.erase(p);
    ready_.push_back(std::move(r));
  }

  static Reply parse_frame_reply(const msgpack::object_handle& h, std::vector<zmq::message_t>& parts,
                                 const Pending& pending) {
    detail::MapView m(h.get());
    Reply r;
    r.seq = m.uinteger("seq");
    r.sim = m.str("sim");
    r.camera = m.str("camera");
    r.frame = m.uinteger("frame");
    r.timestamp_us = m.integer("timestamp_us");
    const std::string type = m.str("type");
    if (type == "result") {
      r.kind = Reply::Kind::result;
      r.width = static_cast<std::uint32_t>(m.uinteger("width"));
      r.height = static_cast<std::uint32_t>(m.uinteger("height"));
      r.format = parse_format(m.str("format"));
      r.server_us = m.integer("server_us", -1);
      const std::size_t expected =
          r.format ? static_cast<std::size_t>(r.width) * r.height * bytes_per_pixel(*r.format) : 0;
      const msgpack::object* shm = m.find("shm");
      bool good = r.format.has_value();
      if (good && pending.segment != nullptr && shm != nullptr && shm->type == msgpack::type::MAP) {
        detail::MapView s(*shm);
        good = parts.size() == 1 && s.str("name") == pending.segment->name() && s.uinteger("slot") == pending.slot &&
               s.uinteger("bytes") == expected && expected <= pending.segment->slot_bytes();
        if (good) {
          r.pixels = zmq::message_t(pending.segment->slot(pending.slot), expected);  // copy out of the slot
          r.via_shm = true;
        }
      } else if (good) {
        good = parts.size() == 2 && parts[1].size() == expected;
        if (good) r.pixels = std::move(parts[1]);
      }
      if (!good) {
        r.kind = Reply::Kind::error;
        r.code = "BAD_REPLY";
        r.message = "result reply has a bad format, size, slot or part count";
      }
    } else if (type == "dropped") {
      r.kind = Reply::Kind::dropped;
      r.reason = m.str("reason");
    } else {
      r.kind = Reply::Kind::error;
      r.code = type == "error" ? m.str("code") : "BAD_REPLY";
      r.message = type == "error" ? m.str("message") : "unexpected reply type '" + type + "'";
    }
    return r;
  }

  Reply timeout_reply(std::uint64_t seq, const Pending& p) const {
    Reply r;
    r.kind = Reply::Kind::timeout;
    r.seq = seq;
    r.sim = options_.sim;
    r.camera = p.camera;
    r.frame = p.frame;
    r.code = "TIMEOUT";
    r.message = "no reply within the timeout";
    r.round_trip_ms = std::chrono::duration<double, std::milli>(detail::Clock::now() - p.sent).count();
    return r;
  }

  void expire_pending() {
    const auto limit = detail::Clock::now() - std::chrono::milliseconds(options_.timeout_ms);
    for (auto it = pending_.begin(); it != pending_.end();) {
      if (it->second.sent <= limit) {
        ready_.push_back(timeout_reply(it->first, it->second));
        abandon(it->first, it->second);
        it = pending_.erase(it);
      } else {
        ++it;
      }
    }
  }

  ClientOptions options_;
  std::string endpoint_;
  std::uint64_t session_;
  // Segments outlive the socket's last use in ~Client (declared first, destroyed last).
  std::vector<std::unique_ptr<detail::Segment>> segments_;
  detail::Segment* current_ = nullptr;
  std::map<std::uint64_t, std::pair<detail::Segment*, std::size_t>> quarantine_;
  ShmState shm_state_ = ShmState::off;
  std::string shm_reason_;
  std::uint64_t shm_frames_ = 0;
  std::uint64_t shm_resent_ = 0;
  zmq::context_t context_;
  zmq::socket_t socket_;
  std::uint64_t next_seq_ = 1;
  std::map<std::uint64_t, Pending> pending_;  // ordered by seq = by send time
  std::deque<Reply> ready_;
  std::uint64_t waiting_control_ = 0;
  std::optional<msgpack::object_handle> control_reply_;
  std::uint64_t late_replies_ = 0;
  std::uint64_t foreign_replies_ = 0;
};

}  // namespace simharmon
