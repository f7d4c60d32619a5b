import Foundation

/// Pixels as 0...255 values, row-major, `channels` per pixel.
struct Pixmap {
    let width: Int
    let height: Int
    let channels: Int
    let values: [UInt8]

    /// RGBA bytes (grey replicated), what a CGImage with 8 bits per component takes.
    func rgba() -> [UInt8] {
        var out = [UInt8](repeating: 255, count: width * height * 4)
        for i in 0..<(width * height) {
            let r = values[i * channels]
            out[i * 4] = r
            out[i * 4 + 1] = channels >= 3 ? values[i * channels + 1] : r
            out[i * 4 + 2] = channels >= 3 ? values[i * channels + 2] : r
        }
        return out
    }
}

/// The manifest's image.to_pixels: round((clip(x, -1, 1) + 1) * 127.5) in Float with round-half-to-even, as
/// torch and numpy do, then the crop; so every runtime shows the same pixels. NaN (a diverged model) is 0, as on
/// Android and the web, instead of trapping in UInt8(_:); infinities clip like any other value (to 0 / 255).
enum Pixels {
    static func toPixel(_ x: Float) -> UInt8 {
        guard !x.isNaN else { return 0 }
        let c = min(max(x, -1), 1)
        return UInt8(((c + 1) * 127.5).rounded(.toNearestOrEven))
    }

    /// Image `index` of an NCHW batch `x` with `shape`, cropped to (top, left, height, width) when given.
    static func image(_ x: [Float], shape: [Int], crop: [Int]?, index: Int = 0) -> Pixmap {
        let (c, h, w) = (shape[1], shape[2], shape[3])
        let box = crop ?? [0, 0, h, w]
        let (top, left, ch, cw) = (box[0], box[1], box[2], box[3])
        let base = index * c * h * w
        var out = [UInt8](repeating: 0, count: ch * cw * c)
        for y in 0..<ch {
            for xx in 0..<cw {
                for k in 0..<c {
                    out[(y * cw + xx) * c + k] = toPixel(x[base + k * h * w + (top + y) * w + (left + xx)])
                }
            }
        }
        return Pixmap(width: cw, height: ch, channels: c, values: out)
    }
}
