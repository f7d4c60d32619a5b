import Foundation

/// Runs one graph: `input` is the noise (one step) or the sample (DDIM); `timestep` is nil for one step.
protocol GraphRunner {
    func run(graph: String, input: [Float], timestep: Int?) throws -> [Float]
}

/// The manifest's sampling section as code: one call for a one-step student, or the deterministic DDIM loop
/// (diffusers DDIMScheduler.step with eta 0) over the graph named for each step.
enum Sampler {
    static func sample(_ sampling: Sampling, noise: [Float], runner: GraphRunner,
                       onStep: ((Int, Int) -> Void)? = nil) throws -> [Float] {
        switch sampling {
        case .oneStep(let graph):
            let image = try runner.run(graph: graph, input: noise, timestep: nil)
            onStep?(1, 1)
            return image
        case .ddim(let s):
            var x = noise
            let lo = Float(-s.clipSampleRange)
            let hi = Float(s.clipSampleRange)
            for i in 0..<s.steps {
                let eps = try runner.run(graph: s.graphPerStep[i], input: x, timestep: s.timesteps[i])
                guard eps.count == x.count else {
                    throw ManifestError("graph \(s.graphPerStep[i]) returned \(eps.count) values for \(x.count)")
                }
                let a = Float(s.alphasCumprod[i])
                let aPrev = Float(s.alphasCumprodPrev[i])
                let sqrtA = a.squareRoot()
                let sqrtOneMinusA = (1 - a).squareRoot()
                let sqrtAPrev = aPrev.squareRoot()
                let sqrtOneMinusAPrev = (1 - aPrev).squareRoot()
                var next = [Float](repeating: 0, count: x.count)
                for j in 0..<x.count {
                    var x0 = (x[j] - sqrtOneMinusA * eps[j]) / sqrtA
                    if s.clipSample { x0 = min(max(x0, lo), hi) }
                    next[j] = sqrtAPrev * x0 + sqrtOneMinusAPrev * eps[j]
                }
                x = next
                onStep?(i + 1, s.steps)
            }
            return x
        }
    }
}
