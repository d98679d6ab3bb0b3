"""Run directories: atomic writes, config fingerprints, per-stage and per-seed resume.

Layout of a run directory (see ``docs/cli.md``)::

    config.toml             resolved configuration (every default filled in)
    fingerprint             sha256 of the result-relevant part of the config and the data files
    members/<seed>/         checkpoints and trajectory indices, written by the training code
    shards/<seed>.safetensors   per-seed attribution: m [Q], delta.<method> [N, Q] per method
    samples.safetensors     the reduced SeedSamples of the main method: m [K, Q], delta [K, N, Q]
    samples.<method>.safetensors   the same for each method in attribute.compare
    agreement.json          how each compared method agrees with the main one, per measurement
    summary.json            distributional statistics and failed seeds
    report/                 index.html, report.md and PNG plots
    manifest.json           sha256, size and inputs of every file above (:mod:`dtda.rundir.manifest`)
    .lock                   pid of the driver writing the run (:mod:`dtda.rundir.lock`)

Every file is written to a temporary name in the same directory and renamed into place, so a
run killed at any moment leaves either the old file, the new file, or no file, never half a file;
then the driver records it in the manifest. A stage or seed is finished exactly when its output
file verifies against the manifest; anything else is recomputed (``docs/reliability.md``).
"""

from dtda.atomic import atomic_write_bytes, atomic_write_text, atomic_path, atomic_dir
from dtda.rundir.directory import RunDir
from dtda.rundir.errors import RunDirError

__all__ = ["RunDir", "RunDirError", "atomic_write_bytes", "atomic_write_text", "atomic_path", "atomic_dir"]
