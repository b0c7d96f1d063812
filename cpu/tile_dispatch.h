// A register tile call's run-time shape (rows 1..8, panels 1..3) to the
// compile-time instantiation Tile::run<R, P>, for the bf16 and INT8 dot
// tiles (cpu/isa_avx512_bf16.cc, cpu/isa_avx512_vnni.cc). The f32 tiles in
// cpu/isa_impl.inc keep their own switches, which also cover the 6-row ymm
// tile of the narrower sets.
#pragma once

namespace tokensieve {
namespace cpu {

template <class Tile, int P, class... Args>
inline void tile_rows(int rows, Args... args) {
  switch (rows) {
    case 8: return Tile::template run<8, P>(args...);
    case 7: return Tile::template run<7, P>(args...);
    case 6: return Tile::template run<6, P>(args...);
    case 5: return Tile::template run<5, P>(args...);
    case 4: return Tile::template run<4, P>(args...);
    case 3: return Tile::template run<3, P>(args...);
    case 2: return Tile::template run<2, P>(args...);
    default: return Tile::template run<1, P>(args...);
  }
}

template <class Tile, class... Args>
inline void dispatch_tile(int rows, int panels, Args... args) {
  switch (panels) {
    case 3: return tile_rows<Tile, 3>(rows, args...);
    case 2: return tile_rows<Tile, 2>(rows, args...);
    default: return tile_rows<Tile, 1>(rows, args...);
  }
}

}  // namespace cpu
}  // namespace tokensieve
