{
  "targets": [
    {
      "target_name": "map_file",
      "sources": ["native/map-file.c"],
      "cflags": ["-O2", "-Wall", "-Wextra"]
    }
  ]
}
