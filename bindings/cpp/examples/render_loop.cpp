// Example render loop: sends synthetic frames for several cameras to `simharmon serve`, checks
// every reply (kind, camera, frame index echo, size, format, byte count, and optionally the
// pixels), and exits non-zero on any failure.
//
//   render_loop tcp://127.0.0.1:5555 [--frames N] [--cameras C] [--width W] [--height H]
//               [--timeout-ms T] [--shm] [--expect-identity] [--expect-outside-mask-unchanged]
//
// Camera c sends format {rgb8, bgra8, rgb32f}[c % 3]; camera 1 asks for rgb8 replies, the others
// for their own format. When the server's enhancer reads inserted-actor masks (`inputs` in its
// `welcome`, e.g. the bundled default model), every frame carries one: a synthetic "actor", a
// rectangle that moves across the frame. --shm moves frames through a shared-memory segment
// (same host; protocol §9). It also sends one frame of an unsupported size and expects an
// UNSUPPORTED_SIZE error, to show errors come back as replies, not hangs.
//
// --expect-identity: the server runs the identity stand-in; every pixel must come back unchanged.
// --expect-outside-mask-unchanged: the model only changes the actor and a band around it (stream
// option region_pixel, as the bundled default model): pixels 8 or more pixels away from the
// rectangle must come back unchanged.
#include <simharmon/client.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

struct Args {
  std::string endpoint;
  int frames = 10, cameras = 2, width = 64, height = 48, timeout_ms = 10000;
  bool shm = false, expect_identity = false, expect_outside_mask = false;
};

int failures = 0;
constexpr int kMaskMargin = 8;  // pixels around the actor the model may change (band + slack)

void fail(const std::string& what) {
  std::fprintf(stderr, "render_loop: FAIL %s\n", what.c_str());
  ++failures;
}

Args parse(int argc, char** argv) {
  Args a;
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s ENDPOINT [--frames N] [--cameras C] [--width W] [--height H] [--timeout-ms T] "
                         "[--shm] [--expect-identity] [--expect-outside-mask-unchanged]\n", argv[0]);
    std::exit(2);
  }
  a.endpoint = argv[1];
  for (int i = 2; i < argc; ++i) {
    std::string k = argv[i];
    auto next = [&]() -> int {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "missing value for %s\n", k.c_str());
        std::exit(2);
      }
      return std::atoi(argv[++i]);
    };
    if (k == "--frames") a.frames = next();
    else if (k == "--cameras") a.cameras = next();
    else if (k == "--width") a.width = next();
    else if (k == "--height") a.height = next();
    else if (k == "--timeout-ms") a.timeout_ms = next();
    else if (k == "--shm") a.shm = true;
    else if (k == "--expect-identity") a.expect_identity = true;
    else if (k == "--expect-outside-mask-unchanged") a.expect_outside_mask = true;
    else {
      std::fprintf(stderr, "unknown argument %s\n", k.c_str());
      std::exit(2);
    }
  }
  return a;
}

simharmon::PixelFormat camera_format(int c) {
  static const simharmon::PixelFormat formats[] = {simharmon::PixelFormat::rgb8, simharmon::PixelFormat::bgra8,
                                                   simharmon::PixelFormat::rgb32f};
  return formats[c % 3];
}

struct Rect {
  int x0, y0, x1, y1;  // [x0, x1) x [y0, y1)
  bool near(int x, int y, int margin) const {
    return x >= x0 - margin && x < x1 + margin && y >= y0 - margin && y < y1 + margin;
  }
};

// The synthetic actor of camera c at tick t: a quarter-size rectangle moving left to right.
Rect actor(int t, int c, int w, int h) {
  const int aw = std::max(w / 4, 1), ah = std::max(h / 4, 1);
  const int x0 = (t * 3 + c * 7) % std::max(w - aw, 1);
  const int y0 = h / 3;
  return {x0, y0, x0 + aw, y0 + ah};
}

std::vector<std::uint8_t> actor_mask(const Rect& r, int w, int h) {
  std::vector<std::uint8_t> mask(static_cast<std::size_t>(w) * h, 0);
  for (int y = r.y0; y < r.y1; ++y)
    for (int x = r.x0; x < r.x1; ++x) mask[static_cast<std::size_t>(y) * w + x] = 255;  // fully inserted actor
  return mask;
}

// A moving gradient in the given format ("rendered" frame t of camera c), with the actor in flat red.
std::vector<unsigned char> render(int t, int c, int w, int h, simharmon::PixelFormat f, const Rect& r) {
  std::vector<unsigned char> buf(static_cast<std::size_t>(w) * h * simharmon::bytes_per_pixel(f));
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      const bool in_actor = r.near(x, y, 0);
      const unsigned char red = in_actor ? 230 : static_cast<unsigned char>((x * 4 + t * 8 + c * 60) & 255);
      const unsigned char g = in_actor ? 20 : static_cast<unsigned char>(y * 255 / std::max(h - 1, 1));
      const unsigned char b = in_actor ? 30 : static_cast<unsigned char>((t * 16 + c * 30) & 255);
      const std::size_t i = static_cast<std::size_t>(y) * w + x;
      switch (f) {
        case simharmon::PixelFormat::rgb8: buf[3 * i] = red; buf[3 * i + 1] = g; buf[3 * i + 2] = b; break;
        case simharmon::PixelFormat::bgra8:
          buf[4 * i] = b; buf[4 * i + 1] = g; buf[4 * i + 2] = red;
          buf[4 * i + 3] = static_cast<unsigned char>((x + y) & 255);  // alpha must come back unchanged
          break;
        case simharmon::PixelFormat::rgb32f: {
          const float v[3] = {red / 255.0f, g / 255.0f, b / 255.0f};
          std::memcpy(&buf[12 * i], v, sizeof v);
          break;
        }
        default: break;
      }
    }
  }
  return buf;
}

// What an unchanged frame looks like in the reply format.
std::vector<unsigned char> expected_identity(const std::vector<unsigned char>& in, simharmon::PixelFormat in_f,
                                             simharmon::PixelFormat out_f, int w, int h) {
  if (in_f == out_f) return in;
  std::vector<unsigned char> out(static_cast<std::size_t>(w) * h * simharmon::bytes_per_pixel(out_f));
  for (std::size_t i = 0; i < static_cast<std::size_t>(w) * h; ++i) {  // only bgra8 -> rgb8 is used here
    out[3 * i] = in[4 * i + 2];
    out[3 * i + 1] = in[4 * i + 1];
    out[3 * i + 2] = in[4 * i];
  }
  return out;
}

// Pixels that differ from `want` (all of them, or only those away from the actor).
int differing_pixels(const std::vector<unsigned char>& want, const std::uint8_t* got, simharmon::PixelFormat f, int w,
                     int h, const Rect* skip_near) {
  const std::size_t bpp = simharmon::bytes_per_pixel(f);
  int count = 0;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      if (skip_near && skip_near->near(x, y, kMaskMargin)) continue;
      const std::size_t at = (static_cast<std::size_t>(y) * w + x) * bpp;
      bool same = true;
      if (f == simharmon::PixelFormat::rgb32f) {
        float a[3], b[3];
        std::memcpy(a, &want[at], sizeof a);
        std::memcpy(b, got + at, sizeof b);
        for (int k = 0; k < 3; ++k) same = same && std::fabs(a[k] - b[k]) <= 1e-6f;
      } else {
        same = std::memcmp(&want[at], got + at, bpp) == 0;
      }
      count += same ? 0 : 1;
    }
  return count;
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse(argc, argv);
  simharmon::ClientOptions options;
  options.sim = "cpp-example";
  options.timeout_ms = a.timeout_ms;
  options.max_in_flight = static_cast<std::size_t>(std::max(a.cameras, 1)) + 1;
  options.shared_memory = a.shm;
  try {
    simharmon::Client client(a.endpoint, options);
    const simharmon::Welcome w = client.hello();
    std::string inputs;
    for (const auto& i : w.inputs) inputs += (inputs.empty() ? "" : ",") + i;
    std::printf("render_loop: connected to engine '%s' (stand_in=%d, untrained=%d, pixel_multiple=%u, inputs=[%s])\n",
                w.engine.c_str(), w.stand_in, w.untrained, w.pixel_multiple, inputs.c_str());
    if (a.expect_identity && !w.stand_in) fail("--expect-identity but the server is not running the identity stand-in");
    const bool send_masks = w.reads("mask");
    if (a.expect_outside_mask && !send_masks) fail("--expect-outside-mask-unchanged but the server reads no masks");

    std::vector<double> latencies;
    for (int t = 0; t < a.frames; ++t) {
      std::vector<std::vector<unsigned char>> sent(a.cameras);
      std::vector<std::vector<std::uint8_t>> masks(a.cameras);
      std::vector<Rect> actors(a.cameras);
      for (int c = 0; c < a.cameras; ++c) {
        simharmon::Frame f;
        f.camera = "cam" + std::to_string(c);
        f.index = static_cast<std::uint64_t>(t);
        f.timestamp_us = static_cast<std::int64_t>(t) * 33333;
        f.width = static_cast<std::uint32_t>(a.width);
        f.height = static_cast<std::uint32_t>(a.height);
        f.format = camera_format(c);
        if (c == 1) f.reply_format = simharmon::PixelFormat::rgb8;
        actors[c] = actor(t, c, a.width, a.height);
        sent[c] = render(t, c, a.width, a.height, f.format, actors[c]);
        f.pixels = sent[c].data();
        if (send_masks) {
          masks[c] = actor_mask(actors[c], a.width, a.height);
          f.mask = masks[c].data();
        }
        client.submit(f);
      }
      for (int received = 0; received < a.cameras; ++received) {
        auto r = client.next_result();
        if (!r) {
          fail("tick " + std::to_string(t) + ": no reply at all");
          break;
        }
        const std::string who = "tick " + std::to_string(t) + " " + r->camera;
        if (!r->ok()) {
          fail(who + ": reply kind " + std::to_string(static_cast<int>(r->kind)) + " " + r->code + ": " + r->message +
               r->reason);
          continue;
        }
        const int c = std::atoi(r->camera.c_str() + 3);
        if (r->camera.rfind("cam", 0) != 0 || c < 0 || c >= a.cameras) {
          fail(who + ": unknown camera echoed");
          continue;
        }
        const auto in_f = camera_format(c);
        const auto out_f = c == 1 ? simharmon::PixelFormat::rgb8 : in_f;
        if (r->frame != static_cast<std::uint64_t>(t)) fail(who + ": frame index echo " + std::to_string(r->frame));
        if (r->timestamp_us != static_cast<std::int64_t>(t) * 33333) fail(who + ": timestamp echo");
        if (r->width != static_cast<std::uint32_t>(a.width) || r->height != static_cast<std::uint32_t>(a.height))
          fail(who + ": size " + std::to_string(r->width) + "x" + std::to_string(r->height));
        if (!r->format || *r->format != out_f) fail(who + ": reply format");
        if (a.shm && client.shm_active() && !r->via_shm) fail(who + ": result did not come through shared memory");
        if (r->size() != static_cast<std::size_t>(a.width) * a.height * simharmon::bytes_per_pixel(out_f)) {
          fail(who + ": reply byte count " + std::to_string(r->size()));
        } else if (a.expect_identity || a.expect_outside_mask) {
          const auto want = expected_identity(sent[c], in_f, out_f, a.width, a.height);
          const int bad = differing_pixels(want, r->data(), out_f, a.width, a.height,
                                           a.expect_identity ? nullptr : &actors[c]);
          if (bad) fail(who + ": " + std::to_string(bad) + " pixels differ from the input" +
                        (a.expect_identity ? "" : " away from the actor"));
        }
        latencies.push_back(r->round_trip_ms);
      }
    }
    if (a.shm) {
      std::printf("render_loop: shared memory %s, %llu frames through slots%s%s\n",
                  client.shm_active() ? "active" : "refused", static_cast<unsigned long long>(client.shm_frames()),
                  client.shm_reason().empty() ? "" : ": ", client.shm_reason().c_str());
      if (!client.shm_active() || client.shm_frames() == 0) fail("--shm but no frame went through shared memory");
    }

    // An unsupported size must come back as an error reply, and the client must keep working.
    simharmon::Frame bad;
    bad.camera = "bad-size";
    bad.width = static_cast<std::uint32_t>(a.width + 1);
    bad.height = static_cast<std::uint32_t>(a.height);
    std::vector<unsigned char> bad_pixels(static_cast<std::size_t>(bad.width) * bad.height * 3);
    bad.pixels = bad_pixels.data();
    auto r = client.enhance(bad);
    if (r.kind != simharmon::Reply::Kind::error || r.code != "UNSUPPORTED_SIZE")
      fail("odd-size frame: expected an UNSUPPORTED_SIZE error, got code '" + r.code + "'");
    client.heartbeat();
    const std::string stats = client.stats();
    if (stats.find("frames_out") == std::string::npos) fail("stats reply lacks frames_out");

    std::sort(latencies.begin(), latencies.end());
    const double p50 = latencies.empty() ? 0.0 : latencies[latencies.size() / 2];
    if (failures == 0 && static_cast<int>(latencies.size()) == a.frames * a.cameras) {
      std::printf("render_loop: OK %d frames x %d cameras%s, p50 %.2f ms\n", a.frames, a.cameras,
                  send_masks ? " with actor masks" : "", p50);
      return 0;
    }
    if (static_cast<int>(latencies.size()) != a.frames * a.cameras) fail("not every frame came back");
  } catch (const std::exception& e) {
    fail(std::string("exception: ") + e.what());
  }
  std::fprintf(stderr, "render_loop: %d failure(s)\n", failures);
  return 1;
}
