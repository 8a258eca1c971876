{
  "targets": [
    {
      "target_name": "hypersd_avx2",
      "type": "static_library",
      "sources": ["<!@(node -p \"require('fs').readdirSync('native/cpu').filter(f=>/_avx2\\.cpp$/.test(f)).map(f=>'native/cpu/'+f).join(' ')\")"],
      "include_dirs": ["native/include", "native/core", "native/cpu"],
      "cflags_cc": ["-std=c++17", "-O3", "-fexceptions", "-mavx2", "-mfma", "-mf16c"],
      "cflags_cc!": ["-fno-exceptions"]
    },
    {
      "target_name": "hypersd_avx512",
      "type": "static_library",
      "sources": ["<!@(node -p \"require('fs').readdirSync('native/cpu').filter(f=>/_avx512\\.cpp$/.test(f)).map(f=>'native/cpu/'+f).join(' ')\")"],
      "include_dirs": ["native/include", "native/core", "native/cpu"],
      "cflags_cc": ["-std=c++17", "-O3", "-fexceptions", "-mavx512f", "-mavx512dq", "-mavx512vl", "-mavx2", "-mfma", "-mf16c", "-mprefer-vector-width=512"],
      "cflags_cc!": ["-fno-exceptions"]
    },
    {
      "target_name": "hypersd",
      "dependencies": ["hypersd_avx2", "hypersd_avx512"],
      "sources": ["<!@(node -p \"['native/core','native/cpu','native/napi'].flatMap(d=>require('fs').readdirSync(d).filter(f=>/\\.cpp$/.test(f)&&!/_avx(2|512)\\.cpp$/.test(f)).map(f=>d+'/'+f)).join(' ')\")"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "native/include", "native/core", "native/cpu"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
      "cflags_cc": ["-std=c++17", "-O3", "-fexceptions"],
      "cflags_cc!": ["-fno-exceptions"]
    }
  ]
}
