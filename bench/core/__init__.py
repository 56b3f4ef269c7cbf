"""The bottom layer: registries, configuration, files and paths, result rows and which rows count, caches, threads,
devices, progress bars. Imports nothing else of the package."""
