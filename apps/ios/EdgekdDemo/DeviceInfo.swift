import Darwin
import Foundation

/// What the benchmark JSON says about the device, and the process memory the benchmark samples.
enum DeviceInfo {
    /// The hardware identifier, e.g. "iPhone16,1" (UIDevice.name needs an entitlement since iOS 16).
    static var machine: String {
        var info = utsname()
        uname(&info)
        return withUnsafeBytes(of: &info.machine) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
    }

    static var os: String {
        "iOS " + ProcessInfo.processInfo.operatingSystemVersionString
    }

    /// The process's physical footprint (what iOS's memory limit counts), in MiB; nil if the kernel says no.
    static func footprintMb() -> Double? {
        var info = task_vm_info_data_t()
        var count = mach_msg_type_number_t(MemoryLayout<task_vm_info_data_t>.size / MemoryLayout<natural_t>.size)
        let status = withUnsafeMutablePointer(to: &info) { pointer in
            pointer.withMemoryRebound(to: integer_t.self, capacity: Int(count)) {
                task_info(mach_task_self_, task_flavor_t(TASK_VM_INFO), $0, &count)
            }
        }
        guard status == KERN_SUCCESS else { return nil }
        return Double(info.phys_footprint) / 1_048_576
    }
}
