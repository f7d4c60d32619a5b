import CoreML
import Foundation

/// Every graph of the manifest as a CoreML model, called with the input/output names the manifest gives.
/// At load each model description is compared with the manifest (shape and dtype), so a model and a manifest
/// that disagree fail here with a message, not with garbage pixels. Unchecked Sendable: the app calls it from one
/// task at a time, and the models are not mutated after init.
final class CoreMLGraphs: GraphRunner, @unchecked Sendable {
    private let manifest: Manifest
    private var models: [String: MLModel] = [:]

    init(manifest: Manifest, directory: URL, computeUnits: MLComputeUnits = .all) async throws {
        self.manifest = manifest
        let configuration = MLModelConfiguration()
        configuration.computeUnits = computeUnits
        for g in manifest.models {
            let url = try await Self.compiledModel(file: g.file, directory: directory)
            let model = try MLModel(contentsOf: url, configuration: configuration)
            try Self.check(model.modelDescription, against: g)
            models[g.name] = model
        }
    }

    /// Xcode compiles a bundled .mlpackage to <stem>.mlmodelc at build time; a package copied as a plain folder
    /// is compiled here once (MLModel.compileModel) and cached in Application Support.
    private static func compiledModel(file: String, directory: URL) async throws -> URL {
        let stem = (file as NSString).deletingPathExtension
        for candidate in [directory.appendingPathComponent(stem + ".mlmodelc"),
                          Bundle.main.bundleURL.appendingPathComponent(stem + ".mlmodelc")]
        where FileManager.default.fileExists(atPath: candidate.path) {
            return candidate
        }
        let package = directory.appendingPathComponent(file)
        guard FileManager.default.fileExists(atPath: package.path) else {
            throw ManifestError("model file \(file) is not in the app bundle (export with --into-app ios)")
        }
        let cacheDir = try FileManager.default.url(for: .applicationSupportDirectory, in: .userDomainMask,
                                                   appropriateFor: nil, create: true)
        let cached = cacheDir.appendingPathComponent(stem + ".mlmodelc")
        if FileManager.default.fileExists(atPath: cached.path) { return cached }
        let compiled = try await MLModel.compileModel(at: package)
        try FileManager.default.moveItem(at: compiled, to: cached)
        return cached
    }

    private static func dtypeName(_ type: MLMultiArrayDataType) -> String {
        switch type {
        case .float32: return "float32"
        case .int32: return "int32"
        case .double: return "float64"
        case .float16: return "float16"
        @unknown default: return "unknown"
        }
    }

    private static func check(_ description: MLModelDescription, against g: GraphSpec) throws {
        let inputs = description.inputDescriptionsByName
        let outputs = description.outputDescriptionsByName
        for spec in g.inputs + [g.output] {
            guard let feature = inputs[spec.name] ?? outputs[spec.name] else {
                throw ManifestError("\(g.file) has no feature '\(spec.name)' (has \(inputs.keys.sorted()) -> \(outputs.keys.sorted()))")
            }
            guard let array = feature.multiArrayConstraint else {
                throw ManifestError("\(g.file): '\(spec.name)' is not a multi-array")
            }
            let shape = array.shape.map { $0.intValue }
            let dtype = dtypeName(array.dataType)
            guard shape == spec.shape, dtype == spec.dtype else {
                throw ManifestError("\(g.file): '\(spec.name)' is \(shape) \(dtype), the manifest says \(spec.shape) \(spec.dtype)")
            }
        }
    }

    func run(graph: String, input: [Float], timestep: Int?) throws -> [Float] {
        let spec = try manifest.graph(graph)
        guard let model = models[graph] else { throw ManifestError("graph \(graph) is not loaded") }
        var features: [String: MLFeatureValue] = [:]
        if let t = timestep {
            let sample = try spec.input(Contract.sampleInput)
            features[Contract.sampleInput] = MLFeatureValue(multiArray: try Self.floats(input, shape: sample.shape))
            let ts = try spec.input(Contract.timestepInput)
            features[Contract.timestepInput] = MLFeatureValue(multiArray: try Self.timesteps(t, spec: ts))
        } else {
            let noise = try spec.input(Contract.noiseInput)
            features[Contract.noiseInput] = MLFeatureValue(multiArray: try Self.floats(input, shape: noise.shape))
        }
        let result = try model.prediction(from: try MLDictionaryFeatureProvider(dictionary: features))
        guard let out = result.featureValue(for: spec.output.name)?.multiArrayValue else {
            throw ManifestError("\(spec.file) returned no '\(spec.output.name)'")
        }
        return try Self.read(out)
    }

    private static func floats(_ values: [Float], shape: [Int]) throws -> MLMultiArray {
        let array = try MLMultiArray(shape: shape.map { NSNumber(value: $0) }, dataType: .float32)
        array.withUnsafeMutableBufferPointer(ofType: Float.self) { pointer, _ in
            for i in 0..<values.count { pointer[i] = values[i] }
        }
        return array
    }

    /// The timestep tensor filled with `t` for every image of the batch, in the dtype the manifest names.
    private static func timesteps(_ t: Int, spec: TensorSpec) throws -> MLMultiArray {
        let shape = spec.shape.map { NSNumber(value: $0) }
        if spec.dtype == "int32" {
            let array = try MLMultiArray(shape: shape, dataType: .int32)
            array.withUnsafeMutableBufferPointer(ofType: Int32.self) { pointer, _ in
                for i in 0..<spec.count { pointer[i] = Int32(t) }
            }
            return array
        }
        let array = try MLMultiArray(shape: shape, dataType: .float32)
        array.withUnsafeMutableBufferPointer(ofType: Float.self) { pointer, _ in
            for i in 0..<spec.count { pointer[i] = Float(t) }
        }
        return array
    }

    /// An output array in logical (row-major) order, honouring its strides (CoreML may pad rows).
    private static func read(_ array: MLMultiArray) throws -> [Float] {
        guard array.dataType == .float32 else {
            throw ManifestError("output dtype \(dtypeName(array.dataType)) is not float32")
        }
        let shape = array.shape.map { $0.intValue }
        let strides = array.strides.map { $0.intValue }
        let count = shape.reduce(1, *)
        var out = [Float](repeating: 0, count: count)
        array.withUnsafeBufferPointer(ofType: Float.self) { pointer in
            for flat in 0..<count {
                var rest = flat
                var offset = 0
                for axis in stride(from: shape.count - 1, through: 0, by: -1) {
                    offset += (rest % shape[axis]) * strides[axis]
                    rest /= shape[axis]
                }
                out[flat] = pointer[offset]
            }
        }
        return out
    }
}
