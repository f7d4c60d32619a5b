import Foundation

/// A manifest the app cannot use: the message names the field and what was expected.
struct ManifestError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

struct TensorSpec: Decodable {
    let name: String
    let shape: [Int]
    let dtype: String
    let layout: String

    var count: Int { shape.reduce(1, *) }

    enum CodingKeys: String, CodingKey { case name, shape, dtype, layout }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        shape = try c.decode([Int].self, forKey: .shape)
        dtype = try c.decodeIfPresent(String.self, forKey: .dtype) ?? "float32"
        layout = try c.decodeIfPresent(String.self, forKey: .layout) ?? Contract.layout
    }
}

struct GraphSpec: Decodable {
    let name: String
    let file: String
    let sha256: String?
    let inputs: [TensorSpec]
    let output: TensorSpec

    func input(_ name: String) throws -> TensorSpec {
        guard let spec = inputs.first(where: { $0.name == name }) else {
            throw ManifestError("graph '\(self.name)' has no input '\(name)'")
        }
        return spec
    }
}

enum Sampling {
    /// Call the one graph on the noise; its output is the image.
    case oneStep(graph: String)
    /// Deterministic DDIM (eta 0) over epsilon-predicting step graphs, one entry per step.
    case ddim(DdimSchedule)
}

struct DdimSchedule {
    let timesteps: [Int]
    let graphPerStep: [String]
    let alphasCumprod: [Double]
    let alphasCumprodPrev: [Double]
    let clipSample: Bool
    let clipSampleRange: Double
    var steps: Int { timesteps.count }
}

struct NoiseSpec: Decodable {
    let shape: [Int]
    let portable: String?
}

struct ImageSpec: Decodable {
    let range: [Double]
    let crop: [Int]?
    let channels: Int?
}

/// The raw sampling section (every key optional), turned into `Sampling` after decoding.
private struct SamplingJSON: Decodable {
    let kind: String
    let graph: String?
    let prediction: String?
    let timesteps: [Int]?
    let graphPerStep: [String]?
    let alphasCumprod: [Double]?
    let alphasCumprodPrev: [Double]?
    let clipSample: Bool?
    let clipSampleRange: Double?
}

private struct ManifestJSON: Decodable {
    let formatVersion: Int
    let name: String
    let target: String
    let precision: String?
    let models: [GraphSpec]
    let sampling: SamplingJSON
    let noise: NoiseSpec
    let image: ImageSpec
}

/// Manifest v3 (docs/manifest-v3.md), decoded and validated so that a bad file fails at load with one message.
struct Manifest {
    let formatVersion: Int
    let name: String
    let target: String
    let precision: String
    let models: [GraphSpec]
    let sampling: Sampling
    let noise: NoiseSpec
    let image: ImageSpec

    static func parse(_ data: Data) throws -> Manifest {
        if let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
           let version = object["format_version"] as? Int, version != Contract.manifestVersion {
            throw ManifestError("manifest format_version is \(version); this app reads \(Contract.manifestVersion) "
                + "(re-export with `edgekd export RUN --target coreml --into-app ios`)")
        }
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        let raw: ManifestJSON
        do {
            raw = try decoder.decode(ManifestJSON.self, from: data)
        } catch {
            throw ManifestError("manifest is not valid JSON or misses a field: \(error)")
        }
        let manifest = Manifest(formatVersion: raw.formatVersion, name: raw.name, target: raw.target,
                                precision: raw.precision ?? "fp32", models: raw.models,
                                sampling: try parseSampling(raw.sampling), noise: raw.noise, image: raw.image)
        try manifest.validate()
        return manifest
    }

    private static func parseSampling(_ s: SamplingJSON) throws -> Sampling {
        switch s.kind {
        case "one_step":
            guard let graph = s.graph else { throw ManifestError("sampling.graph is missing") }
            return .oneStep(graph: graph)
        case "ddim":
            let prediction = s.prediction ?? Contract.prediction
            guard prediction == Contract.prediction else {
                throw ManifestError("sampling.prediction '\(prediction)' is not supported (epsilon only)")
            }
            guard let timesteps = s.timesteps, let graphs = s.graphPerStep, let alphas = s.alphasCumprod,
                  let alphasPrev = s.alphasCumprodPrev else {
                throw ManifestError("sampling needs timesteps, graph_per_step, alphas_cumprod and alphas_cumprod_prev")
            }
            return .ddim(DdimSchedule(timesteps: timesteps, graphPerStep: graphs, alphasCumprod: alphas,
                                      alphasCumprodPrev: alphasPrev, clipSample: s.clipSample ?? false,
                                      clipSampleRange: s.clipSampleRange ?? 1.0))
        default:
            throw ManifestError("sampling.kind '\(s.kind)' is not supported (one_step or ddim)")
        }
    }

    func graph(_ name: String) throws -> GraphSpec {
        guard let g = models.first(where: { $0.name == name }) else {
            throw ManifestError("sampling names graph '\(name)' but models has no such entry")
        }
        return g
    }

    /// The image tensor shape [N, C, H, W] the sampler works on.
    func imageShape() throws -> [Int] {
        switch sampling {
        case .oneStep(let graph):
            return try self.graph(graph).input(Contract.noiseInput).shape
        case .ddim(let schedule):
            return try self.graph(schedule.graphPerStep[0]).input(Contract.sampleInput).shape
        }
    }

    private func validate() throws {
        switch sampling {
        case .oneStep(let name):
            let g = try graph(name)
            _ = try g.input(Contract.noiseInput)
            try expectOutput(g, Contract.imageOutput)
        case .ddim(let s):
            guard !s.timesteps.isEmpty else { throw ManifestError("sampling.timesteps is empty") }
            for (key, count) in [("graph_per_step", s.graphPerStep.count), ("alphas_cumprod", s.alphasCumprod.count),
                                 ("alphas_cumprod_prev", s.alphasCumprodPrev.count)] where count != s.steps {
                throw ManifestError("sampling.\(key) has \(count) entries, timesteps has \(s.steps)")
            }
            for name in Set(s.graphPerStep) {
                let g = try graph(name)
                _ = try g.input(Contract.sampleInput)
                let t = try g.input(Contract.timestepInput)
                guard Contract.timestepDtypes.contains(t.dtype) else {
                    throw ManifestError("graph '\(name)': timestep dtype \(t.dtype) is not supported")
                }
                try expectOutput(g, Contract.epsilonOutput)
            }
        }
        for g in models {
            for t in g.inputs.filter({ $0.name != Contract.timestepInput }) + [g.output] {
                guard Contract.imageDtypes.contains(t.dtype) else {
                    throw ManifestError("graph '\(g.name)': \(t.name) dtype \(t.dtype) is not supported (float32)")
                }
                guard t.layout == Contract.layout, t.shape.count == 4 else {
                    throw ManifestError("graph '\(g.name)': \(t.name) must be \(Contract.layout) rank 4, is \(t.shape)")
                }
            }
        }
        let shape = try imageShape()
        guard Array(shape.dropFirst()) == noise.shape else {
            throw ManifestError("noise.shape \(noise.shape) differs from the model input \(shape)")
        }
        guard noise.portable == Contract.noiseGenerator else {
            throw ManifestError("noise.portable is '\(noise.portable ?? "null")'; this app reproduces '\(Contract.noiseGenerator)' only")
        }
        if let c = image.crop {
            guard c.count == 4, c[0] >= 0, c[1] >= 0, c[0] + c[2] <= shape[2], c[1] + c[3] <= shape[3] else {
                throw ManifestError("image.crop \(c) does not fit the \(shape[2])x\(shape[3]) canvas")
            }
        }
    }

    private func expectOutput(_ g: GraphSpec, _ name: String) throws {
        guard g.output.name == name else {
            throw ManifestError("graph '\(g.name)' outputs '\(g.output.name)', expected '\(name)'")
        }
    }
}
