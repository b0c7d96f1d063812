// Host blocks for the copies an async call works on (CallContext::stage).
//
// Every Promise-API call on host data copies the spans it reads and writes
// into memory the job owns. A fresh block of a few MB is fresh pages, and the
// first touch of each 4 KiB page is a page fault: ~11 µs on the Zen 5 VMs
// (Firecracker) this project is developed on, ~0.3–1 µs on bare metal. The
// CLS row of CLIP-L b1 (4.7 MB of q and k staged) took 0.85 ms median and
// 13 ms at p90 through the Promise API against 0.06 ms Sync, nearly all of it
// in those faults. Blocks are therefore returned to a pool when the job is
// done and handed out again, warm, to the next call of a similar size.
//
// The pool holds at most kIdleCap bytes of idle blocks (less on machines with
// little memory), frees blocks idle for more than kIdleSeconds when the next
// block is asked for, and never keeps a block larger than the cap. Blocks under kMinPooled
// come from malloc directly (the heap recycles those without page faults).
#pragma once

#include <cstddef>
#include <memory>

namespace tokensieve {
namespace binding {

struct StagingCacheStats {
  size_t idle_bytes = 0;  // held for reuse, not in use by any call
  size_t idle_blocks = 0;
};

// A 64-byte aligned block of at least `bytes`, returned to the pool when the
// last shared_ptr to it goes (from any thread). Null when out of memory.
std::shared_ptr<char> staging_block(size_t bytes);

StagingCacheStats staging_cache_stats();

// Frees every idle block; returns the bytes freed. Blocks in use are not
// affected and return to the pool as usual.
size_t empty_staging_cache();

}  // namespace binding
}  // namespace tokensieve
