import org.jetbrains.kotlin.gradle.dsl.JvmTarget

plugins {
    id("com.android.application")
    id("org.jetbrains.kotlin.android")
}

android {
    namespace = "dev.edgekd.demo"
    compileSdk = 35

    defaultConfig {
        applicationId = "dev.edgekd.demo"
        minSdk = 26
        targetSdk = 35
        versionCode = 1
        versionName = "0.1.0"
    }

    // the .tflite files are memory-mapped from the APK: they must be stored uncompressed
    androidResources {
        noCompress += "tflite"
    }

    buildTypes {
        release {
            isMinifyEnabled = false
        }
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }

    testOptions {
        unitTests.all {
            // the golden vectors shared with Python and the web app (apps/golden)
            it.systemProperty("edgekd.golden", rootProject.file("../golden").absolutePath)
        }
    }
}

// Bytecode for Java 17 from whatever JDK runs Gradle (17 or newer): no jvmToolchain(17), which makes Gradle look
// for exactly a JDK 17 and fails where none is installed and no toolchain resolver is configured.
kotlin {
    compilerOptions {
        jvmTarget.set(JvmTarget.JVM_17)
    }
}

dependencies {
    // LiteRT (formerly TensorFlow Lite): org.tensorflow.lite.Interpreter, XNNPACK on the CPU
    implementation("com.google.ai.edge.litert:litert:2.1.0")

    testImplementation("junit:junit:4.13.2")
    // android.jar's org.json throws "Stub!" in JVM unit tests: the real implementation for them
    testImplementation("org.json:json:20240303")
}
