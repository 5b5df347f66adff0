# SPDX-License-Identifier: MIT
"""The Kubernetes recipes in etc/kubernetes/: valid YAML, and consistent.

No cluster runs here; what is checked is what a cluster would not tell until
a pod failed to connect:
- each file parses and holds the kinds it should;
- every volumeMount names a volume of its pod, every configMap volume a
  ConfigMap of the file, in the same namespace;
- the udsd.conf in the ConfigMap is accepted by the real udsd (udsd -t);
- each listener's socket directory is a mountPath of the udsd container, and
  the client containers mount the same directory (the same emptyDir of the
  pod, or the same hostPath on the node);
- the socket's mode lets its group read and write (connect needs write) and
  others nothing, and that group is one every client container has (the
  pod's fsGroup or supplementalGroups, or its runAsGroup);
- an emptyDir (created 0777 by kubelet) is made udsd's and not writable by
  others by an init container before udsd checks it.

Each check is also run against broken copies of the manifests, which it must
reject: a check that cannot fail proves nothing.

    check-manifests.py [UDSD_BIN]
"""
import configparser
import copy
import os
import subprocess
import sys
import tempfile

try:
    import yaml
except ImportError:
    print("SKIP: python3-yaml is not installed (tests/install-deps.sh installs it)")
    sys.exit(77)

HERE = os.path.dirname(os.path.abspath(__file__))
DIR = os.path.join(HERE, "..", "..", "etc", "kubernetes")
KINDS = {"daemonset.yaml": ["Namespace", "ConfigMap", "DaemonSet", "Deployment"],
         "sidecar.yaml": ["ConfigMap", "Deployment"]}
WORKLOADS = ("DaemonSet", "Deployment", "StatefulSet", "Job", "Pod")


def pod_spec(doc):
    return doc["spec"] if doc["kind"] == "Pod" else doc["spec"]["template"]["spec"]


def namespace(doc):
    return doc["metadata"].get("namespace", "default")


def containers(spec, init=False):
    return spec.get("containers", []) + (spec.get("initContainers", []) if init else [])


def is_udsd(c):
    return (c.get("command") or [""])[0].split("/")[-1] == "udsd"


def mount_of(c, volumes, path):
    """The volume mounted at path in container c, or None."""
    for m in c.get("volumeMounts", []):
        if m["mountPath"] == path:
            return volumes.get(m["name"])
    return None


def read_conf(text):
    p = configparser.ConfigParser(comment_prefixes=(";", "#"), inline_comment_prefixes=None,
                                  interpolation=None)
    p.read_string(text)
    return p


def groups_of(spec, c):
    """The gids a container's processes have, from the pod's and its own securityContext."""
    psc, csc = spec.get("securityContext", {}), c.get("securityContext", {})
    gids = set(psc.get("supplementalGroups", []))
    for sc in (psc, csc):
        if "fsGroup" in sc:
            gids.add(sc["fsGroup"])
    g = csc.get("runAsGroup", psc.get("runAsGroup"))
    if g is not None:
        gids.add(g)
    return gids


def run_as(spec, c):
    return c.get("securityContext", {}).get("runAsUser",
                                             spec.get("securityContext", {}).get("runAsUser", 0))


def check_structure(docs, fname):
    bad = []
    kinds = [d.get("kind") for d in docs]
    if kinds != KINDS[fname]:
        bad.append("%s: kinds %s, expected %s" % (fname, kinds, KINDS[fname]))
    cms = {(namespace(d), d["metadata"]["name"]) for d in docs if d.get("kind") == "ConfigMap"}
    for d in docs:
        if not d.get("apiVersion") or not d.get("metadata", {}).get("name"):
            bad.append("%s: a %s without apiVersion or name" % (fname, d.get("kind")))
        if d.get("kind") not in WORKLOADS:
            continue
        spec = pod_spec(d)
        if d["kind"] != "Pod":
            sel = d["spec"]["selector"]["matchLabels"]
            labels = d["spec"]["template"]["metadata"]["labels"]
            if any(labels.get(k) != v for k, v in sel.items()):
                bad.append("%s: %s: selector does not match the template's labels" % (fname, d["metadata"]["name"]))
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for c in containers(spec, init=True):
            for m in c.get("volumeMounts", []):
                if m["name"] not in volumes:
                    bad.append("%s: container %s mounts unknown volume %s" % (fname, c["name"], m["name"]))
        for v in volumes.values():
            if "configMap" in v and (namespace(d), v["configMap"]["name"]) not in cms:
                bad.append("%s: volume %s names ConfigMap %s, not in this file's namespace %s"
                           % (fname, v["name"], v["configMap"]["name"], namespace(d)))
    return bad


def udsd_confs(docs):
    """(workload doc, pod spec, udsd container, volumes, udsd.conf text) for each udsd container."""
    cms = {(namespace(d), d["metadata"]["name"]): d for d in docs if d.get("kind") == "ConfigMap"}
    for d in docs:
        if d.get("kind") not in WORKLOADS:
            continue
        spec = pod_spec(d)
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for c in containers(spec):
            if not is_udsd(c):
                continue
            conf_path = c["command"][c["command"].index("-c") + 1]
            vol = mount_of(c, volumes, os.path.dirname(conf_path))
            if not vol or "configMap" not in vol:
                yield d, spec, c, volumes, None
                continue
            cm = cms.get((namespace(d), vol["configMap"]["name"]))
            yield d, spec, c, volumes, cm and cm["data"].get(os.path.basename(conf_path))


def clients_of(docs, d, spec, c, vol):
    """(spec, container) of every other container that mounts the socket's volume."""
    if "emptyDir" in vol:
        return [(spec, o, o["volumeMounts"]) for o in containers(spec) if o is not c and any(
            m["name"] == vol["name"] for m in o.get("volumeMounts", []))]
    out = []
    for other in docs:
        if other is d or other.get("kind") not in WORKLOADS:
            continue
        ospec = pod_spec(other)
        paths = {v["name"] for v in ospec.get("volumes", [])
                 if v.get("hostPath", {}).get("path") == vol["hostPath"]["path"]}
        out += [(ospec, o, o["volumeMounts"]) for o in containers(ospec)
                if any(m["name"] in paths for m in o.get("volumeMounts", []))]
    return out


def check_socket(docs, fname, udsd_bin=None):
    bad = []
    found = 0
    for d, spec, c, volumes, text in udsd_confs(docs):
        where = "%s: %s/%s" % (fname, d["metadata"]["name"], c["name"])
        if text is None:
            bad.append(where + ": no udsd.conf from a ConfigMap at the path given to -c")
            continue
        if udsd_bin:
            bad += check_with_udsd(udsd_bin, text, where)
        conf = read_conf(text)
        for sec in (s for s in conf.sections() if s.startswith("listener ")):
            found += 1
            bad += check_listener(docs, d, spec, c, volumes, conf[sec], "%s [%s]" % (where, sec))
    if not found:
        bad.append(fname + ": no udsd listener found")
    return bad


def check_listener(docs, d, spec, c, volumes, lsn, where):
    path = lsn.get("path", "")
    if not path.startswith("/"):
        return [where + ": path %r is not a socket file" % path]
    vol = mount_of(c, volumes, os.path.dirname(path))
    if not vol or not ("emptyDir" in vol or "hostPath" in vol):
        return [where + ": %s is not an emptyDir or hostPath mount of the udsd container"
                % os.path.dirname(path)]
    bad = []
    mode = int(lsn.get("mode", "0660"), 8)
    if mode & 0o060 != 0o060 or mode & 0o007:
        bad.append(where + ": mode %04o: the group needs rw (connect writes), others nothing" % mode)
    if "group" not in lsn or not lsn["group"].isdigit():
        return bad + [where + ": group must be a number the pods know (supplementalGroups, fsGroup)"]
    gid = int(lsn["group"])
    clients = clients_of(docs, d, spec, c, vol)
    if not clients:
        bad.append(where + ": no client container mounts the socket's volume")
    for ospec, o, mounts in clients:
        mnt = next(m["mountPath"] for m in mounts if m["name"] in
                   {v["name"] for v in ospec.get("volumes", []) if v == vol or
                    v.get("hostPath", {}).get("path") == vol.get("hostPath", {}).get("path", 0)})
        if mnt != os.path.dirname(path):
            bad.append(where + ": client %s mounts the socket's directory at %s, not %s"
                       % (o["name"], mnt, os.path.dirname(path)))
        if gid not in groups_of(ospec, o):
            bad.append(where + ": client %s lacks group %d (fsGroup/supplementalGroups: %s)"
                       % (o["name"], gid, sorted(groups_of(ospec, o))))
    if "emptyDir" in vol:
        bad += check_emptydir(spec, c, vol, where)
    return bad


def check_emptydir(spec, c, vol, where):
    """kubelet makes an emptyDir 0777: someone must make it udsd's and take write away first."""
    uid = run_as(spec, c)
    for i in spec.get("initContainers", []):
        if any(m["name"] == vol["name"] for m in i.get("volumeMounts", [])):
            cmd = " ".join(i.get("command", []) + i.get("args", []))
            if "go-w" in cmd and (uid == 0 or "chown %d " % uid in cmd):
                return []
    return [where + ": the emptyDir is 0777; no init container chowns it to uid %d and removes "
            "group/other write (udsd refuses such a directory)" % uid]


def check_with_udsd(udsd_bin, text, where):
    with tempfile.NamedTemporaryFile("w", suffix=".conf") as f:
        f.write(text)
        f.flush()
        r = subprocess.run([udsd_bin, "-t", "-q", "-c", f.name], capture_output=True, text=True)
    return [] if r.returncode == 0 else [where + ": udsd -t: " + (r.stderr or r.stdout).strip()]


def check(files, udsd_bin=None):
    bad = []
    for fname, docs in files.items():
        bad += check_structure(docs, fname)
        bad += check_socket(docs, fname, udsd_bin)
    return bad


def set_conf(docs, old, new):
    for d in docs:
        if d["kind"] == "ConfigMap":
            d["data"]["udsd.conf"] = d["data"]["udsd.conf"].replace(old, new)


def pod(docs, kind="DaemonSet"):
    return next(pod_spec(d) for d in docs if d["kind"] == kind)


# Broken copies each check must reject: (file, what is broken, how).
MUTATIONS = [
    ("daemonset.yaml", "socket group not the clients'", lambda ds: set_conf(ds, "group = 2000", "group = 2001")),
    ("daemonset.yaml", "socket mode without group write", lambda ds: set_conf(ds, "mode = 0660", "mode = 0640")),
    ("daemonset.yaml", "client without the group",
     lambda ds: pod(ds, "Deployment")["securityContext"].pop("supplementalGroups")),
    ("daemonset.yaml", "socket outside the hostPath mount",
     lambda ds: set_conf(ds, "path = /run/udsd/udsd.sock", "path = /run/udsd.sock")),
    ("daemonset.yaml", "client mounts another host path",
     lambda ds: pod(ds, "Deployment")["volumes"][0]["hostPath"].update(path="/run/other")),
    ("daemonset.yaml", "a config udsd refuses", lambda ds: set_conf(ds, "threads = 4", "threads = many")),
    ("daemonset.yaml", "mount of an unknown volume",
     lambda ds: pod(ds)["containers"][0]["volumeMounts"][0].update(name="nosuch")),
    ("sidecar.yaml", "no fsGroup", lambda ds: pod(ds, "Deployment")["securityContext"].pop("fsGroup")),
    ("sidecar.yaml", "emptyDir left 0777", lambda ds: pod(ds, "Deployment").pop("initContainers")),
    ("sidecar.yaml", "application mounts the socket elsewhere",
     lambda ds: pod(ds, "Deployment")["containers"][1]["volumeMounts"][0].update(mountPath="/sock")),
]


def main():
    udsd_bin = sys.argv[1] if len(sys.argv) > 1 else None
    files = {}
    for fname in sorted(KINDS):
        with open(os.path.join(DIR, fname)) as f:
            files[fname] = [d for d in yaml.safe_load_all(f) if d is not None]
    failed = 0
    for problem in check(files, udsd_bin):
        print("FAIL: " + problem)
        failed += 1
    for fname, what, mutate in MUTATIONS:
        broken = copy.deepcopy(files)
        mutate(broken[fname])
        found = check({fname: broken[fname]}, udsd_bin)
        if found:
            print("ok - rejects %s: %s" % (what, found[0]))
        else:
            print("FAIL: a manifest with %s passes the checks" % what)
            failed += 1
    print("%d manifests checked, %d broken copies, %d failed" % (
        sum(len(d) for d in files.values()), len(MUTATIONS), failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
