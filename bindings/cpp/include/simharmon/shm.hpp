// simharmon bridge client: the shared-memory segment of docs/PROTOCOL.md §9 (POSIX only).
//
// The client creates and owns the segment (shm_open O_CREAT|O_EXCL, mode 0600), writes the magic
// and a random token into its 64-byte header, offers it in `hello`, and then puts each frame's
// buffers into a free slot. A slot carries one frame from submit until that frame's reply has been
// read; the slot of a frame that timed out stays reserved ("quarantined") until its late reply
// arrives, because a slow server may still write the result there. The segment is unlinked and
// unmapped when the Segment is destroyed.
#pragma once

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#define SIMHARMON_HAS_SHM 1
#else
#define SIMHARMON_HAS_SHM 0
#endif

namespace simharmon {
namespace detail {

inline constexpr std::size_t kShmHeaderBytes = 64;
inline constexpr std::size_t kShmAlign = 64;  // slot sizes and buffer offsets within a slot
inline constexpr std::size_t kShmMaxSlots = 64;
inline constexpr char kShmMagic[] = "SIMHSHM1";  // 8 bytes, no terminator on the wire

inline std::size_t align_up(std::size_t n) { return (n + kShmAlign - 1) / kShmAlign * kShmAlign; }

// Where a frame's buffers go in a slot: each at the next multiple of 64 after the previous one.
// Returns (offset, size) per buffer and sets `end` to the end of the last one.
inline std::vector<std::pair<std::size_t, std::size_t>> slot_layout(const std::vector<std::size_t>& sizes,
                                                                    std::size_t& end) {
  std::vector<std::pair<std::size_t, std::size_t>> layout;
  end = 0;
  for (std::size_t size : sizes) {
    const std::size_t offset = align_up(end);
    layout.emplace_back(offset, size);
    end = offset + size;
  }
  return layout;
}

class Segment {
 public:
  // Creates the segment; throws std::system_error when the platform or /dev/shm refuses.
  Segment(std::size_t slots, std::size_t slot_bytes) : slots_(slots), slot_bytes_(align_up(slot_bytes)) {
#if SIMHARMON_HAS_SHM
    std::random_device rd;
    static const char* hex = "0123456789abcdef";
    name_ = "shb_";
    for (int i = 0; i < 16; ++i) name_.push_back(hex[rd() % 16]);
    for (auto& b : token_) b = static_cast<std::uint8_t>(rd() & 0xff);
    bytes_ = kShmHeaderBytes + slots_ * slot_bytes_;
    const std::string path = "/" + name_;
    const int fd = ::shm_open(path.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd < 0) throw std::system_error(errno, std::generic_category(), "shm_open " + path);
    if (::ftruncate(fd, static_cast<off_t>(bytes_)) != 0) {
      const int err = errno;
      ::close(fd);
      ::shm_unlink(path.c_str());
      throw std::system_error(err, std::generic_category(), "ftruncate " + path);
    }
    void* mapped = ::mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    const int err = errno;
    ::close(fd);
    if (mapped == MAP_FAILED) {
      ::shm_unlink(path.c_str());
      throw std::system_error(err, std::generic_category(), "mmap " + path);
    }
    base_ = static_cast<std::uint8_t*>(mapped);
    std::memcpy(base_, kShmMagic, 8);
    std::memcpy(base_ + 8, token_.data(), token_.size());
    busy_.assign(slots_, false);
#else
    throw std::system_error(std::make_error_code(std::errc::function_not_supported),
                            "this platform has no POSIX shared memory");
#endif
  }

  ~Segment() {
#if SIMHARMON_HAS_SHM
    if (base_ != nullptr) {
      ::munmap(base_, bytes_);
      ::shm_unlink(("/" + name_).c_str());
    }
#endif
  }

  Segment(const Segment&) = delete;
  Segment& operator=(const Segment&) = delete;

  const std::string& name() const { return name_; }
  std::size_t slots() const { return slots_; }
  std::size_t slot_bytes() const { return slot_bytes_; }
  std::string token_hex() const {
    static const char* hex = "0123456789abcdef";
    std::string out;
    for (auto b : token_) {
      out.push_back(hex[b >> 4]);
      out.push_back(hex[b & 15]);
    }
    return out;
  }

  std::uint8_t* slot(std::size_t i) { return base_ + kShmHeaderBytes + i * slot_bytes_; }

  // A free slot, or -1 when all are busy (the frame then goes inline).
  long acquire() {
    for (std::size_t i = 0; i < busy_.size(); ++i)
      if (!busy_[i]) {
        busy_[i] = true;
        return static_cast<long>(i);
      }
    return -1;
  }
  void release(std::size_t i) {
    if (i < busy_.size()) busy_[i] = false;
  }
  std::size_t busy() const { return static_cast<std::size_t>(std::count(busy_.begin(), busy_.end(), true)); }
  bool idle() const { return busy() == 0; }

 private:
  std::size_t slots_, slot_bytes_, bytes_ = 0;
  std::string name_;
  std::array<std::uint8_t, 16> token_{};
  std::uint8_t* base_ = nullptr;
  std::vector<bool> busy_;
};

}  // namespace detail
}  // namespace simharmon
