// simharmon bridge client: header-only C++17, cppzmq + msgpack-cxx.
//
// Speaks protocol version 1 of docs/PROTOCOL.md to `simharmon serve` over a DEALER socket.
// Every call is bounded by ClientOptions::timeout_ms; replies are matched to requests by `seq`,
// so late replies (after a timeout or a server restart) are recognised and discarded. ZeroMQ
// reconnects by itself; ZMQ_IMMEDIATE keeps frames from queueing while no server is connected.
//
// Not thread-safe: use one Client per thread.
#pragma once

#include <msgpack.hpp>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include <array>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <deque>
#include <map>
#include <optional>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace simharmon {

inline constexpr int kProtocolVersion = 1;

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
// (or, with ClientOptions::zero_copy, until the frame's reply arrives).
struct Frame {
  std::string camera = "cam0";
  std::uint64_t index = 0;         // echoed in the reply
  std::int64_t timestamp_us = 0;   // simulation time, echoed
  std::uint32_t width = 0, height = 0;
  PixelFormat format = PixelFormat::rgb8;
  const void* pixels = nullptr;    // width * height * bytes_per_pixel(format) bytes
  const std::uint8_t* mask = nullptr;  // optional [H, W] uint8
  const float* depth = nullptr;        // optional [H, W] float32, metres
  const float* flow = nullptr;         // optional [H, W, 2] float32, pixels
  std::optional<std::array<double, 4>> intrinsics;  // fx, fy, cx, cy (pixels)
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
  zmq::message_t pixels;              // result image, width * height * bytes_per_pixel(*format)

  bool ok() const { return kind == Kind::result; }
  const std::uint8_t* data() const { return static_cast<const std::uint8_t*>(pixels.data()); }
  std::size_t size() const { return pixels.size(); }
};

struct Welcome {
  std::string engine;
  bool stand_in = false, untrained = false;
  std::uint32_t pixel_multiple = 1, max_width = 0, max_height = 0, max_streams = 0;
  std::uint64_t max_message_bytes = 0;
  std::uint32_t heartbeat_interval_ms = 0, stream_idle_timeout_ms = 0;
};

struct ClientOptions {
  std::string sim = "sim";
  int timeout_ms = 5000;
  std::size_t max_in_flight = 8;
  bool zero_copy = false;  // true: send pixel buffers without copying them (keep them alive until the reply)
  int sndhwm = 16, rcvhwm = 64;
  int reconnect_ivl_ms = 100, reconnect_ivl_max_ms = 1000;
  int heartbeat_ivl_ms = 1000;
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

// Reads typed fields out of a msgpack map, ignoring unknown keys (forward compatible).
class MapView {
 public:
  explicit MapView(const msgpack::object& obj) {
    if (obj.type != msgpack::type::MAP) throw Error("BAD_REPLY", "reply header is not a msgpack map");
    for (std::uint32_t i = 0; i < obj.via.map.size; ++i) {
      const auto& kv = obj.via.map.ptr[i];
      if (kv.key.type == msgpack::type::STR) fields_.emplace(kv.key.as<std::string>(), &kv.val);
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
  std::uint64_t uinteger(const std::string& key, std::uint64_t fallback = 0) const {
    auto* v = find(key);
    return v && v->type == msgpack::type::POSITIVE_INTEGER ? v->via.u64 : fallback;
  }
  bool boolean(const std::string& key, bool fallback = false) const {
    auto* v = find(key);
    return v && v->type == msgpack::type::BOOLEAN ? v->via.boolean : fallback;
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

}  // namespace detail

class Client {
 public:
  explicit Client(const std::string& endpoint, ClientOptions options = {})
      : options_(std::move(options)), endpoint_(endpoint), socket_(context_, zmq::socket_type::dealer) {
    if (options_.timeout_ms <= 0) throw std::invalid_argument("timeout_ms must be positive");
    const std::string id = detail::random_routing_id();
    socket_.set(zmq::sockopt::routing_id, zmq::const_buffer(id.data(), id.size()));
    socket_.set(zmq::sockopt::linger, 0);
    socket_.set(zmq::sockopt::immediate, 1);
    socket_.set(zmq::sockopt::sndhwm, options_.sndhwm);
    socket_.set(zmq::sockopt::rcvhwm, options_.rcvhwm);
    socket_.set(zmq::sockopt::sndtimeo, options_.timeout_ms);
    socket_.set(zmq::sockopt::reconnect_ivl, options_.reconnect_ivl_ms);
    socket_.set(zmq::sockopt::reconnect_ivl_max, options_.reconnect_ivl_max_ms);
    socket_.set(zmq::sockopt::heartbeat_ivl, options_.heartbeat_ivl_ms);
    socket_.set(zmq::sockopt::heartbeat_timeout, 3 * options_.heartbeat_ivl_ms);
    socket_.set(zmq::sockopt::heartbeat_ttl, 3 * options_.heartbeat_ivl_ms);
    if (endpoint.rfind("tcp://[", 0) == 0) socket_.set(zmq::sockopt::ipv6, 1);
    socket_.connect(endpoint);
  }

  ~Client() {
    try {  // best effort: release this client's streams now instead of waiting for expiry
      msgpack::sbuffer buf;
      msgpack::packer<msgpack::sbuffer> pk(buf);
      pk.pack_map(3);
      pack_kv(pk, "version", kProtocolVersion);
      pack_kv(pk, "type", "bye");
      pack_kv(pk, "seq", next_seq_++);
      socket_.set(zmq::sockopt::linger, 100);  // give the bye 100 ms to leave; never block longer
      (void)socket_.send(zmq::buffer(buf.data(), buf.size()), zmq::send_flags::dontwait);
    } catch (...) {
    }
  }

  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  Welcome hello() {
    auto h = control("hello");
    detail::MapView m(h.get());
    Welcome w;
    w.engine = m.str("engine");
    w.stand_in = m.boolean("stand_in");
    w.untrained = m.boolean("untrained");
    w.pixel_multiple = static_cast<std::uint32_t>(m.uinteger("pixel_multiple", 1));
    w.max_width = static_cast<std::uint32_t>(m.uinteger("max_width"));
    w.max_height = static_cast<std::uint32_t>(m.uinteger("max_height"));
    w.max_streams = static_cast<std::uint32_t>(m.uinteger("max_streams"));
    w.max_message_bytes = m.uinteger("max_message_bytes");
    w.heartbeat_interval_ms = static_cast<std::uint32_t>(m.uinteger("heartbeat_interval_ms"));
    w.stream_idle_timeout_ms = static_cast<std::uint32_t>(m.uinteger("stream_idle_timeout_ms"));
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

  // Send a frame without waiting; returns its seq. Throws Error("BUSY") when max_in_flight frames
  // are unanswered, std::invalid_argument for an inconsistent Frame, Timeout when it cannot be sent.
  std::uint64_t submit(const Frame& f) {
    if (pending_.size() + ready_.size() >= options_.max_in_flight)
      throw Error("BUSY", "max_in_flight frames already in flight; collect replies with next_result()");
    if (!f.pixels || f.width == 0 || f.height == 0) throw std::invalid_argument("frame needs pixels, width and height");
    const std::size_t px = static_cast<std::size_t>(f.width) * f.height;
    const std::uint64_t seq = next_seq_++;

    std::vector<std::string> layers;
    if (f.mask) layers.emplace_back("mask");
    if (f.depth) layers.emplace_back("depth");
    if (f.flow) layers.emplace_back("flow");
    const std::uint32_t n_options = (f.reply_format ? 1u : 0u) + (f.reset ? 1u : 0u) + (f.max_age_ms ? 1u : 0u);

    msgpack::sbuffer buf;
    msgpack::packer<msgpack::sbuffer> pk(buf);
    const std::uint32_t n_fields = 10 + (layers.empty() ? 0 : 1) + (f.intrinsics ? 1 : 0) + (f.pose ? 1 : 0) +
                                   (n_options ? 1 : 0);
    pk.pack_map(n_fields);
    pack_kv(pk, "version", kProtocolVersion);
    pack_kv(pk, "type", "frame");
    pack_kv(pk, "seq", seq);
    pack_kv(pk, "sim", options_.sim);
    pack_kv(pk, "camera", f.camera);
    pack_kv(pk, "frame", f.index);
    pack_kv(pk, "timestamp_us", f.timestamp_us);
    pack_kv(pk, "width", f.width);
    pack_kv(pk, "height", f.height);
    pack_kv(pk, "format", to_string(f.format));
    if (!layers.empty()) pack_kv(pk, "layers", layers);
    if (f.intrinsics) pack_kv(pk, "intrinsics", *f.intrinsics);
    if (f.pose) pack_kv(pk, "pose", *f.pose);
    if (n_options) {
      pk.pack("options");
      pk.pack_map(n_options);
      if (f.reply_format) pack_kv(pk, "reply_format", to_string(*f.reply_format));
      if (f.reset) pack_kv(pk, "reset", true);
      if (f.max_age_ms) pack_kv(pk, "max_age_ms", *f.max_age_ms);
    }

    std::vector<zmq::message_t> parts;
    parts.emplace_back(buf.data(), buf.size());
    parts.push_back(payload(f.pixels, px * bytes_per_pixel(f.format)));
    if (f.mask) parts.push_back(payload(f.mask, px));
    if (f.depth) parts.push_back(payload(f.depth, px * sizeof(float)));
    if (f.flow) parts.push_back(payload(f.flow, px * 2 * sizeof(float)));
    send(parts);
    pending_[seq] = Pending{detail::Clock::now(), f.camera, f.index};
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
        Reply r = timeout_reply(seq, p != pending_.end() ? p->second : Pending{now, f.camera, f.index});
        if (p != pending_.end()) pending_.erase(p);
        return r;
      }
      receive(static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count()) + 1);
    }
  }

  std::size_t in_flight() const { return pending_.size() + ready_.size(); }
  std::uint64_t late_replies() const { return late_replies_; }

 private:
  struct Pending {
    detail::Clock::time_point sent;
    std::string camera;
    std::uint64_t frame;
  };

  template <typename V>
  static void pack_kv(msgpack::packer<msgpack::sbuffer>& pk, const char* key, const V& value) {
    pk.pack(std::string(key));
    pk.pack(value);
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

  msgpack::object_handle control(const char* type, const std::string* camera = nullptr) {
    const std::uint64_t seq = next_seq_++;
    msgpack::sbuffer buf;
    msgpack::packer<msgpack::sbuffer> pk(buf);
    pk.pack_map(camera ? 5 : 3);
    pack_kv(pk, "version", kProtocolVersion);
    pack_kv(pk, "type", type);
    pack_kv(pk, "seq", seq);
    if (camera) {
      pack_kv(pk, "sim", options_.sim);
      pack_kv(pk, "camera", *camera);
    }
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
    try {
      h = msgpack::unpack(static_cast<const char*>(parts[0].data()), parts[0].size());
    } catch (const std::exception&) {
      ++late_replies_;
      return;
    }
    std::uint64_t seq = 0;
    std::string type;
    try {
      detail::MapView m(h.get());
      seq = m.uinteger("seq");
      type = m.str("type");
    } catch (const Error&) {
      ++late_replies_;
      return;
    }
    if (waiting_control_ != 0 && seq == waiting_control_) {
      control_reply_ = std::move(h);
      return;
    }
    auto p = pending_.find(seq);
    if (p == pending_.end()) {  // reply to a request that already timed out
      ++late_replies_;
      return;
    }
    Reply r = parse_frame_reply(h, parts);
    r.round_trip_ms = std::chrono::duration<double, std::milli>(detail::Clock::now() - p->second.sent).count();
    pending_.erase(p);
    ready_.push_back(std::move(r));
  }

  static Reply parse_frame_reply(const msgpack::object_handle& h, std::vector<zmq::message_t>& parts) {
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
      if (!r.format || parts.size() != 2 || parts[1].size() != expected) {
        r.kind = Reply::Kind::error;
        r.code = "BAD_REPLY";
        r.message = "result reply has a bad format, size or part count";
      } else {
        r.pixels = std::move(parts[1]);
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
        it = pending_.erase(it);
      } else {
        ++it;
      }
    }
  }

  ClientOptions options_;
  std::string endpoint_;
  zmq::context_t context_;
  zmq::socket_t socket_;
  std::uint64_t next_seq_ = 1;
  std::map<std::uint64_t, Pending> pending_;  // ordered by seq = by send time
  std::deque<Reply> ready_;
  std::uint64_t waiting_control_ = 0;
  std::optional<msgpack::object_handle> control_reply_;
  std::uint64_t late_replies_ = 0;
};

}  // namespace simharmon
