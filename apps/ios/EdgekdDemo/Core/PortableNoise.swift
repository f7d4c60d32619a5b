import Foundation

/// mulberry32-boxmuller-v1 (docs/manifest-v3.md): the seeded noise every app reproduces bit for bit, because
/// torch's generator cannot be re-implemented here. `&+` and `&*` wrap at 32 bits like the reference.
struct Mulberry32 {
    private(set) var state: UInt32

    init(seed: UInt32) { state = seed }

    mutating func nextUInt32() -> UInt32 {
        state = state &+ 0x6D2B_79F5
        var t = state
        t = (t ^ (t >> 15)) &* (t | 1)
        t = t ^ (t &+ ((t ^ (t >> 7)) &* (t | 61)))
        return t ^ (t >> 14)
    }

    mutating func nextUnit() -> Double { Double(nextUInt32()) / 4_294_967_296.0 }
}

enum PortableNoise {
    /// `count` standard normals from `seed` (mod 2^32), z0 then z1 per Box-Muller pair, rounded to Float.
    static func normals(seed: Int64, count: Int) -> [Float] {
        var rng = Mulberry32(seed: UInt32(truncatingIfNeeded: seed))
        var out = [Float](repeating: 0, count: count)
        var i = 0
        while i < count {
            let u1 = 1.0 - rng.nextUnit()
            let u2 = rng.nextUnit()
            let r = (-2.0 * log(u1)).squareRoot()
            out[i] = Float(r * cos(2.0 * Double.pi * u2))
            if i + 1 < count { out[i + 1] = Float(r * sin(2.0 * Double.pi * u2)) }
            i += 2
        }
        return out
    }

    /// A batch of `batch` images of `perImage` values each: image i of seed s uses seed s + i.
    static func batch(seed: Int64, batch: Int, perImage: Int) -> [Float] {
        (0..<batch).flatMap { normals(seed: seed &+ Int64($0), count: perImage) }
    }
}
