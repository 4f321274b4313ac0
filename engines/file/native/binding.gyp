{
  "targets": [
    {
      "target_name": "pfscan",
      "sources": ["scan.c"],
      "cflags": ["-O2", "-Wall", "-Wextra"]
    }
  ]
}
