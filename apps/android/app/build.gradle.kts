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

kotlin {
    jvmToolchain(17)
}

dependencies {
    // LiteRT (formerly TensorFlow Lite): org.tensorflow.lite.Interpreter, XNNPACK on the CPU
    implementation("com.google.ai.edge.litert:litert:2.1.0")

    testImplementation("junit:junit:4.13.2")
    // android.jar's org.json throws "Stub!" in JVM unit tests: the real implementation for them
    testImplementation("org.json:json:20240303")
}
