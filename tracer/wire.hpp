#pragma once
// Reading fixed-width fields out of captured bytes. Private to tracer/. Every reader takes the view and an
// offset and asserts (in Debug) that the field lies inside the view: callers check lengths first, these
// helpers only make a missed check loud instead of silent. Fields are copied with memcpy (no casts of
// packed structs, no unaligned loads) and converted to host order here, in one place.

#include <arpa/inet.h>

#include <cassert>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

namespace hoptrace::wire {

using Bytes = std::span<const std::uint8_t>;

[[nodiscard]] inline bool fits(Bytes b, std::size_t offset, std::size_t size) noexcept {
    return offset <= b.size() && size <= b.size() - offset;
}

[[nodiscard]] inline std::uint8_t u8(Bytes b, std::size_t offset) noexcept {
    assert(fits(b, offset, 1));
    return b[offset];
}

[[nodiscard]] inline std::uint16_t be16(Bytes b, std::size_t offset) noexcept {
    assert(fits(b, offset, 2));
    std::uint16_t v = 0;
    std::memcpy(&v, b.data() + offset, sizeof v);
    return ntohs(v);
}

[[nodiscard]] inline std::uint32_t be32(Bytes b, std::size_t offset) noexcept {
    assert(fits(b, offset, 4));
    std::uint32_t v = 0;
    std::memcpy(&v, b.data() + offset, sizeof v);
    return ntohl(v);
}

// Fields in a byte order chosen at run time (a pcapng section says which one it uses).
[[nodiscard]] inline std::uint16_t u16(Bytes b, std::size_t offset, bool big_endian) noexcept {
    assert(fits(b, offset, 2));
    if (big_endian) {
        return be16(b, offset);
    }
    return static_cast<std::uint16_t>(b[offset] | (b[offset + 1] << 8));
}

[[nodiscard]] inline std::uint32_t u32(Bytes b, std::size_t offset, bool big_endian) noexcept {
    assert(fits(b, offset, 4));
    if (big_endian) {
        return be32(b, offset);
    }
    return static_cast<std::uint32_t>(b[offset]) | (static_cast<std::uint32_t>(b[offset + 1]) << 8) |
           (static_cast<std::uint32_t>(b[offset + 2]) << 16) | (static_cast<std::uint32_t>(b[offset + 3]) << 24);
}

[[nodiscard]] inline std::uint64_t u64(Bytes b, std::size_t offset, bool big_endian) noexcept {
    const std::uint64_t first = u32(b, offset, big_endian);
    const std::uint64_t second = u32(b, offset + 4, big_endian);
    return big_endian ? (first << 32) | second : (second << 32) | first;
}

}  // namespace hoptrace::wire
