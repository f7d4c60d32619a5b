import SwiftUI

/// One screen: a seed, Generate (fresh portable noise -> the manifest's one step or DDIM loop -> image +
/// latency) and Benchmark (the shared protocol; the JSON lands in the app's Documents folder).
struct ContentView: View {
    @ObservedObject var model: DemoModel

    var body: some View {
        NavigationStack {
            Form {
                Section("Input") {
                    TextField("seed (integer)", text: $model.seedText)
                        .keyboardType(.numberPad)
                    Stepper("benchmark runs: \(model.runs)", value: $model.runs, in: 1...1000, step: 5)
                }
                Section {
                    HStack {
                        Button("Generate") { Task { await model.generate() } }
                            .buttonStyle(.borderedProminent)
                        Spacer()
                        Button("Benchmark") { Task { await model.benchmark() } }
                            .buttonStyle(.bordered)
                    }
                    .disabled(model.busy || !model.ready)
                }
                if let image = model.image {
                    Section("Image") {
                        Image(decorative: image, scale: 1)
                            .interpolation(.none)
                            .resizable()
                            .aspectRatio(contentMode: .fit)
                            .frame(maxWidth: .infinity, maxHeight: 280)
                    }
                }
                Section("Status") {
                    Text(model.status)
                        .font(.callout.monospaced())
                        .textSelection(.enabled)
                }
            }
            .navigationTitle("edgekd demo")
        }
    }
}

#Preview {
    ContentView(model: DemoModel())
}
