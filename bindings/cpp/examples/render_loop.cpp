// Example render loop: sends synthetic frames for several cameras to `simharmon serve`, checks
// every reply (kind, camera, frame index echo, size, format, byte count, and with
// --expect-identity the pixels themselves), and exits non-zero on any failure.
//
//   render_loop tcp://127.0.0.1:5555 [--frames N] [--cameras C] [--width W] [--height H]
//               [--timeout-ms T] [--expect-identity]
//
// Camera c sends format {rgb8, bgra8, rgb32f}[c % 3]; camera 1 asks for rgb8 replies, the others
// for their own format. It also sends one frame of an unsupported size and expects an
// UNSUPPORTED_SIZE error, to show errors come back as replies, not hangs.
#include <simharmon/client.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

struct Args {
  std::string endpoint;
  int frames = 10, cameras = 2, width = 64, height = 48, timeout_ms = 10000;
  bool expect_identity = false;
};

int failures = 0;

void fail(const std::string& what) {
  std::fprintf(stderr, "render_loop: FAIL %s\n", what.c_str());
  ++failures;
}

Args parse(int argc, char** argv) {
  Args a;
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s ENDPOINT [--frames N] [--cameras C] [--width W] [--height H] "
                         "[--timeout-ms T] [--expect-identity]\n", argv[0]);
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
    else if (k == "--expect-identity") a.expect_identity = true;
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

// A moving gradient in the given format ("rendered" frame t of camera c).
std::vector<unsigned char> render(int t, int c, int w, int h, simharmon::PixelFormat f) {
  std::vector<unsigned char> buf(static_cast<std::size_t>(w) * h * simharmon::bytes_per_pixel(f));
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      const unsigned char r = static_cast<unsigned char>((x * 4 + t * 8 + c * 60) & 255);
      const unsigned char g = static_cast<unsigned char>(y * 255 / std::max(h - 1, 1));
      const unsigned char b = static_cast<unsigned char>((t * 16 + c * 30) & 255);
      const std::size_t i = static_cast<std::size_t>(y) * w + x;
      switch (f) {
        case simharmon::PixelFormat::rgb8: buf[3 * i] = r; buf[3 * i + 1] = g; buf[3 * i + 2] = b; break;
        case simharmon::PixelFormat::bgra8:
          buf[4 * i] = b; buf[4 * i + 1] = g; buf[4 * i + 2] = r;
          buf[4 * i + 3] = static_cast<unsigned char>((x + y) & 255);  // alpha must come back unchanged
          break;
        case simharmon::PixelFormat::rgb32f: {
          const float v[3] = {r / 255.0f, g / 255.0f, b / 255.0f};
          std::memcpy(&buf[12 * i], v, sizeof v);
          break;
        }
        default: break;
      }
    }
  }
  return buf;
}

// What the identity stand-in must return: the input converted to the reply format.
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

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse(argc, argv);
  simharmon::ClientOptions options;
  options.sim = "cpp-example";
  options.timeout_ms = a.timeout_ms;
  options.max_in_flight = static_cast<std::size_t>(std::max(a.cameras, 1)) + 1;
  try {
    simharmon::Client client(a.endpoint, options);
    const simharmon::Welcome w = client.hello();
    std::printf("render_loop: connected to engine '%s' (stand_in=%d, untrained=%d, pixel_multiple=%u)\n",
                w.engine.c_str(), w.stand_in, w.untrained, w.pixel_multiple);
    if (a.expect_identity && !w.stand_in) fail("--expect-identity but the server is not running the identity stand-in");

    std::vector<double> latencies;
    for (int t = 0; t < a.frames; ++t) {
      std::vector<std::vector<unsigned char>> sent(a.cameras);
      for (int c = 0; c < a.cameras; ++c) {
        simharmon::Frame f;
        f.camera = "cam" + std::to_string(c);
        f.index = static_cast<std::uint64_t>(t);
        f.timestamp_us = static_cast<std::int64_t>(t) * 33333;
        f.width = static_cast<std::uint32_t>(a.width);
        f.height = static_cast<std::uint32_t>(a.height);
        f.format = camera_format(c);
        if (c == 1) f.reply_format = simharmon::PixelFormat::rgb8;
        sent[c] = render(t, c, a.width, a.height, f.format);
        f.pixels = sent[c].data();
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
          fail(who + ": reply kind " + std::to_string(static_cast<int>(r->kind)) + " " + r->code + " " + r->message +
               r->reason);
          continue;
        }
        const int c = std::atoi(r->camera.c_str() + 3);
        const auto in_f = camera_format(c);
        const auto out_f = c == 1 ? simharmon::PixelFormat::rgb8 : in_f;
        if (r->camera.rfind("cam", 0) != 0 || c < 0 || c >= a.cameras) fail(who + ": unknown camera echoed");
        if (r->frame != static_cast<std::uint64_t>(t)) fail(who + ": frame index echo " + std::to_string(r->frame));
        if (r->timestamp_us != static_cast<std::int64_t>(t) * 33333) fail(who + ": timestamp echo");
        if (r->width != static_cast<std::uint32_t>(a.width) || r->height != static_cast<std::uint32_t>(a.height))
          fail(who + ": size " + std::to_string(r->width) + "x" + std::to_string(r->height));
        if (!r->format || *r->format != out_f) fail(who + ": reply format");
        if (r->size() != static_cast<std::size_t>(a.width) * a.height * simharmon::bytes_per_pixel(out_f))
          fail(who + ": reply byte count " + std::to_string(r->size()));
        else if (a.expect_identity) {
          const auto want = expected_identity(sent[c], in_f, out_f, a.width, a.height);
          if (std::memcmp(want.data(), r->data(), want.size()) != 0) fail(who + ": pixels differ from the input");
        }
        latencies.push_back(r->round_trip_ms);
      }
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
      std::printf("render_loop: OK %d frames x %d cameras, p50 %.2f ms\n", a.frames, a.cameras, p50);
      return 0;
    }
    if (static_cast<int>(latencies.size()) != a.frames * a.cameras) fail("not every frame came back");
  } catch (const std::exception& e) {
    fail(std::string("exception: ") + e.what());
  }
  std::fprintf(stderr, "render_loop: %d failure(s)\n", failures);
  return 1;
}
