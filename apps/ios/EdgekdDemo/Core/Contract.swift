import Foundation

/// The names and conventions this app relies on, in one place, so the contract test
/// (tests/apps/test_contract.py) can compare them with what `edgekd export` writes (manifest v3, the .mlpackage
/// spec). Shapes and dtypes are read from the manifest and checked against the model description at load time.
enum Contract {
    static let manifestVersion = 3
    static let assetDir = "edgekd"
    static let manifestFile = "student.manifest.json"
    /// `edgekd export --into-app ios` leaves exactly one manifest in assetDir (student_int8.manifest.json...)
    static let manifestSuffix = ".manifest.json"
    /// the runtime this app embeds: CoreML runs .mlpackage models only
    static let target = "coreml"

    /// one-step graph: noise -> image
    static let noiseInput = "noise"
    static let imageOutput = "image"

    /// DDIM step graph: (sample, timestep) -> epsilon
    static let sampleInput = "sample"
    static let timestepInput = "timestep"
    static let epsilonOutput = "epsilon"

    static let layout = "NCHW"
    static let noiseGenerator = "mulberry32-boxmuller-v1"
    static let prediction = "epsilon"

    /// dtypes the app can feed (CoreML has no int64 input: the exporter types the timestep int32)
    static let imageDtypes: Set<String> = ["float32"]
    static let timestepDtypes: Set<String> = ["int32", "float32"]
}
