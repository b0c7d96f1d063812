// Large host blocks kept for reuse: the async API's staged copies
// (binding/common.cc, CallContext::stage) and the kernels' scratch above
// Scratch::kKeepBytes (cpu/gemm.h: packed panels, distance matrices).
//
// A fresh block of a few MB is fresh pages, and the first touch of each
// 4 KiB page is a page fault: ~11 µs on the Zen 5 VMs (Firecracker) this
// project is developed on (MADV_POPULATE_WRITE still ~7 µs a page), against
// ~0.3–1 µs on bare metal. Measured there before this pool:
//   - the CLS row of CLIP-L b1 through the Promise API (4.7 MB of q and k
//     staged): 0.6–0.9 ms median and 8–13 ms at p90, against 0.06 ms Sync;
//   - k-center 2880×4096: a third of each call in faults on the 47 MB of
//     panels and the 33 MB distance matrix, freed after every call.
// So blocks go back to this pool when their user is done and are handed out
// again, warm, to the next request of the same size class.
//
// Bounds: at most a sixteenth of the machine's memory, and 256 MiB, is kept
// idle (the oldest blocks go first); a block larger than that is never kept;
// a background thread frees blocks idle for 5 s. Blocks under 64 KiB come
// from malloc directly (the heap recycles those without page faults).
#pragma once

#include <cstddef>
#include <memory>

namespace tokensieve {
namespace cpu {

struct HostCacheStats {
  size_t idle_bytes = 0;  // held for reuse, in use by nothing
  size_t idle_blocks = 0;
};

// A 64-byte aligned block of at least `bytes`, returned to the pool when the
// last shared_ptr to it goes (from any thread). Null when out of memory.
std::shared_ptr<char> host_block(size_t bytes);

HostCacheStats host_cache_stats();

// Frees every idle block now; returns the bytes freed. Blocks in use are not
// affected and return to the pool when released.
size_t empty_host_cache();

}  // namespace cpu
}  // namespace tokensieve
