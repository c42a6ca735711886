"""`maskgan recognizers fetch`: the zoo's pinned weight files, checked and converted once into the cache."""

from __future__ import annotations


def fetch(a) -> None:
    from maskgan.models.zoo import fetch as zoo_fetch

    done = zoo_fetch.fetch(a.only, cache_dir=a.dir, force=a.force, progress=lambda line: print(line, flush=True))
    ready = [name for name, path in done.items() if path]
    print(f"zoo: {len(ready)} of {len(done)} models ready in {a.dir or zoo_fetch.zoo_dir()}"
          + (f" ({', '.join(ready)})" if ready else ""))
