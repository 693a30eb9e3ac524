"""The per-container shim: owns one container run's stdio, log and exit status, outliving muslind.

Shims are forked by a spawner, ``python3 -I -S <this directory> STATE_ROOT [PIN_DIR...]`` (standard
library only, so it never depends on the daemon's virtualenv; in a mount namespace without the pins:
see the runtime's docstring), which muslind keeps running and feeds state directories;
``STATE_DIR/shim.json`` says what to run. The shim

* is forked twice by the spawner so it is reparented away from muslind (its own session, no
  controlling terminal), marks itself a child subreaper so the container's init and exec processes
  become its children, and prints ``ready`` on its stdout once ``shim.sock`` listens;
* on ``start`` runs ``runc run -d`` with pipes it keeps (or a console socket, receiving the pty master),
  so output written before anyone attaches is still read, logged and forwarded;
* writes the log as Docker's json-file lines, ``started.json`` when the container runs and
  ``exit.json`` when it ends, then ``runc delete``\\ s it and exits: one shim per run.

Forking a ready spawner takes ~3 ms where a fresh ``python3 -I -S`` with these imports takes ~25 ms.

One process, several modules: ``protocol`` (frames and requests on ``shim.sock``, shared with muslind's
``client``), ``reactor`` (the selector loop), ``connection`` (a client's buffers), ``process`` (the
init's and execs' stdio), ``runc`` (spawning and reaping), ``log`` (json-file), ``state`` (the
container's phases, its execs and the requests), ``spawner`` (the process entry point, run by
``__main__``). They import only the standard library and each other (relatively), and this file
imports nothing: muslind imports ``protocol`` without the rest, and the shim process imports the
package as ``shim`` with nothing of muslin's around it.
"""
