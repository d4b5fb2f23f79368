{
  "targets": [
    {
      "target_name": "tidemark_fs",
      "sources": ["native/tidemark_fs.c", "native/tidemark_aead.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    }
  ]
}
