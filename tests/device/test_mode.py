"""Who may read a kernel channel is its producer's choice: the device node gets the mode of
struct seqshm_channel_config.mode (0: 0400) or of the cpustat_mode / selftest_mode parameters,
a mode with any bit but read bits is refused, and another user opens exactly what that mode
lets it (docs/security.md, section 5). Runs in the VM guest as root; the other user is a
forked child that drops to uid/gid 65534 (no passwd entry needed)."""

import errno
import fnmatch
import os
import re
import stat
import subprocess
import traceback
from pathlib import Path

import pytest

if not os.path.isdir("/dev/seqshm"):
    pytest.skip("no /dev/seqshm: the seqshm module is not loaded here (runs in the VM)",
                allow_module_level=True)

APITEST = "/dev/seqshm/apitest"
NOBODY = 65534
GROUP = 4242  # a group a udev rule's GROUP= would give the node; any gid will do
README = Path(__file__).resolve().parents[2] / "module" / "README.md"


def node_mode(path: str) -> int:
    st = os.stat(path)
    assert stat.S_ISCHR(st.st_mode), f"{path} is not a character device"
    return stat.S_IMODE(st.st_mode)


def as_user(action, uid: int = NOBODY, gid: int = NOBODY, groups: tuple[int, ...] = ()) -> int:
    """Runs action() in a child process as uid/gid with exactly `groups` as supplementary
    groups: 0 if it returned, else the errno of the OSError it raised (255 for anything
    else, traceback on stderr)."""
    pid = os.fork()
    if pid == 0:
        code = 255
        try:
            os.setgroups(list(groups))
            os.setgid(gid)
            os.setuid(uid)
            assert (os.getuid(), os.geteuid(), os.getgid()) == (uid, uid, gid)
            action()
            code = 0
        except OSError as e:
            code = e.errno or 255
        except BaseException:  # noqa: BLE001 - the child must exit, whatever happened
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def opener(path: str, flags: int = os.O_RDONLY):
    def action():
        os.close(os.open(path, flags))
    return action


def reader(dev, path: str):
    """Opens `path`, maps its region read-only and reads one payload, checking both."""
    def action():
        with dev.mapped(path) as (fd, m, h):
            assert h["magic"] == dev.MAGIC
            assert len(os.read(fd, h["payload_size"])) == h["payload_size"]
            assert m[:8] == dev.MAGIC.to_bytes(8, "little")
    return action


def insmod_apitest(dev, *params: str) -> subprocess.CompletedProcess:
    path = dev.built_test_module("seqshm_apitest")
    return subprocess.run(dev._tool("insmod") + [path, *params], capture_output=True,
                          text=True)


# ---- the built-in channels and their parameters ---------------------------------------------


def test_builtin_channels_are_readable_by_all_by_default(dev):
    """cpustat is what /proc/stat shows every user, selftest a counting pattern: 0444."""
    for path, param in ((dev.CPUSTAT, "cpustat_mode"), (dev.SELFTEST, "selftest_mode")):
        assert node_mode(path) == 0o444, path
        st = os.stat(path)
        assert (st.st_uid, st.st_gid) == (0, 0)
        assert dev.read_param(param) == "0444"


def test_mode_parameters_set_the_nodes(dev, module_params):
    module_params("cpustat_mode=0400", "selftest_mode=440")
    assert node_mode(dev.CPUSTAT) == 0o400
    assert node_mode(dev.SELFTEST) == 0o440
    assert dev.read_param("cpustat_mode") == "0400"
    assert dev.read_param("selftest_mode") == "0440"
    assert as_user(opener(dev.CPUSTAT)) == errno.EACCES
    assert as_user(opener(dev.SELFTEST)) == errno.EACCES
    assert as_user(reader(dev, dev.SELFTEST), groups=(0,)) == 0  # the node's group, root


def test_selftest_keeps_its_mode_when_recreated(dev, module_params):
    """A run-time geometry change destroys and recreates the channel: same mode."""
    module_params("selftest_mode=0440")
    ino = os.stat(dev.SELFTEST).st_ino
    dev.write_param("selftest_slots", 2)
    assert os.stat(dev.SELFTEST).st_ino != ino, "the channel was not recreated"
    assert node_mode(dev.SELFTEST) == 0o440


@pytest.mark.parametrize("param", ["cpustat_mode", "selftest_mode"])
def test_mode_parameters_are_read_only_after_load(dev, param):
    """A device's mode is fixed when it is registered: sysfs shows it, root cannot write it."""
    path = f"{dev.PARAMS}/{param}"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o444
    with dev.expect_errno(errno.EACCES):
        dev.write_param(param, "0400")
    assert dev.read_param(param) == "0444"


@pytest.mark.parametrize("bad", [
    "cpustat_mode=0644",      # owner write
    "cpustat_mode=0446",      # others write
    "cpustat_mode=0555",      # execute
    "cpustat_mode=0",         # no one: not a mode a device can be given
    "cpustat_mode=",
    "cpustat_mode",
    "selftest_mode=04444",    # set-user-id
    "selftest_mode=01444",    # sticky
    "selftest_mode=020444",   # S_IFCHR | 0444
    "selftest_mode=0x124",    # hexadecimal: modes are octal
    "selftest_mode=8",        # not an octal digit
    "selftest_mode=r--r--r--",
    f"selftest_mode={2**32 + 0o444:o}",
])
def test_bad_mode_parameters_refuse_to_load(dev, reloadable, bad):
    assert dev.rmmod().returncode == 0
    r = subprocess.run(dev._tool("insmod") + [os.environ["SEQSHM_KO"], bad],
                       capture_output=True, text=True)
    assert r.returncode != 0, f"insmod {bad} loaded"
    assert not dev.loaded()
    assert "Invalid argument" in r.stdout + r.stderr, r.stdout + r.stderr
    dev.insmod()


# ---- struct seqshm_channel_config.mode, through seqshm_apitest.ko ----------------------------


def test_api_default_mode_is_owner_only(dev, apitest):
    """A producer that names no mode gets 0400: root reads, no other user can open it."""
    assert node_mode(APITEST) == 0o400
    assert as_user(opener(APITEST)) == errno.EACCES
    assert as_user(opener(APITEST), groups=(0,)) == errno.EACCES


def octal(mode) -> str:
    return "default" if mode is None else f"0{mode:o}"


@pytest.mark.parametrize("mode", [0o400, 0o440, 0o444, 0o404, 0o040], ids=octal)
def test_api_mode_reaches_the_node(dev, mode):
    with dev.loaded_test_module("seqshm_apitest", f"mode=0{mode:o}"):
        assert node_mode(APITEST) == mode
        with open("/sys/class/misc/seqshm-apitest/uevent") as f:
            assert f"DEVMODE=0{mode:o}\n" in f.read()


@pytest.mark.parametrize("mode", [0o644, 0o446, 0o222, 0o555, 0o441, 0o4444, 0o2444, 0o1444,
                                  stat.S_IFCHR | 0o444, 0xFFFF], ids=octal)
def test_api_refuses_a_mode_with_other_bits(dev, mode):
    """seqshm_channel_create() refuses the mode with -EINVAL (so the producer's load fails)
    and leaves nothing behind: no node, the name free for a good mode."""
    r = insmod_apitest(dev, f"mode=0{mode:o}")
    if r.returncode == 0:  # unload it, so that this failure is the only one
        subprocess.run(dev._tool("rmmod") + ["seqshm_apitest"], capture_output=True)
    assert r.returncode != 0, f"mode {mode:#o} was accepted"
    assert "Invalid argument" in r.stdout + r.stderr, r.stdout + r.stderr
    assert not os.path.isdir(dev.APITEST_SYS)
    assert not os.path.exists(APITEST)
    with dev.loaded_test_module("seqshm_apitest", "mode=0444"):
        assert node_mode(APITEST) == 0o444


def test_api_bad_modes_counted_among_the_config_checks(dev, apitest):
    """seqshm_apitest.ko's load-time checks include ten bad modes, all refused."""
    with open(f"{dev.APITEST_SYS}/parameters/failures") as f:
        assert int(f.read()) == 0, "see the kernel log for the checks that failed"
    with open(f"{dev.APITEST_SYS}/parameters/checks") as f:
        assert int(f.read()) >= 35


# ---- what another user can do -----------------------------------------------------------------


def test_other_user_reads_a_0444_channel_but_cannot_open_it_for_writing(dev):
    with dev.loaded_test_module("seqshm_apitest", "mode=0444"):
        assert as_user(reader(dev, APITEST)) == 0
        assert as_user(opener(APITEST, os.O_RDWR)) == errno.EACCES
        assert as_user(opener(APITEST, os.O_WRONLY)) == errno.EACCES


def test_other_user_cannot_open_a_0400_channel(dev):
    with dev.loaded_test_module("seqshm_apitest", "mode=0400"):
        assert as_user(opener(APITEST)) == errno.EACCES
        assert as_user(reader(dev, APITEST)) == errno.EACCES
        assert as_user(reader(dev, APITEST), groups=(0,)) == errno.EACCES
        assert reader(dev, APITEST)() is None  # root does


def test_a_group_reads_a_0440_channel_given_to_it(dev):
    """What the README's udev rule does (GROUP="seqshm" on a 0440 node), done by hand: the
    group's members read, other users cannot open it."""
    with dev.loaded_test_module("seqshm_apitest", "mode=0440"):
        os.chown(APITEST, -1, GROUP)
        assert node_mode(APITEST) == 0o440
        assert as_user(reader(dev, APITEST), groups=(GROUP,)) == 0
        assert as_user(reader(dev, APITEST), gid=GROUP) == 0
        assert as_user(opener(APITEST)) == errno.EACCES
        assert as_user(opener(APITEST, os.O_RDWR), groups=(GROUP,)) == errno.EACCES


def test_other_user_is_told_which_channel_it_may_not_read(dev):
    """The Python reader, as a user the mode keeps out: PermissionError naming the device."""
    seqshm = pytest.importorskip("seqshm")

    def action():
        try:
            seqshm.open(APITEST)
        except PermissionError as e:
            assert e.filename == APITEST, e
            raise
    with dev.loaded_test_module("seqshm_apitest", "mode=0400"):
        assert as_user(action) == errno.EACCES


# ---- the README's udev rule matches the device ------------------------------------------------


def channel_uevent(name: str) -> tuple[str, str, dict[str, str]]:
    """(subsystem, kernel name, uevent variables) of channel `name`'s device, as udev gets
    them."""
    sysdir = f"/sys/class/misc/seqshm-{name}"
    with open(f"{sysdir}/uevent") as f:
        uevent = dict(line.split("=", 1) for line in f.read().splitlines())
    return (os.path.basename(os.readlink(f"{sysdir}/subsystem")),
            os.path.basename(os.path.realpath(sysdir)), uevent)


@pytest.mark.parametrize("mode", [None, 0o440], ids=octal)
def test_device_is_what_a_udev_rule_matches(dev, mode):
    """udev matches SUBSYSTEM and KERNEL against the device's subsystem and kernel name,
    "seqshm-<name>" (the node's path, seqshm/<name>, is DEVNAME), and keeps the kernel's
    DEVMODE, the producer's mode, when no rule names a MODE. The guest has no udev: this
    checks what it would be given."""
    params = () if mode is None else (f"mode=0{mode:o}",)
    with dev.loaded_test_module("seqshm_apitest", *params):
        subsystem, kernel, uevent = channel_uevent("apitest")
        assert (subsystem, kernel) == ("misc", "seqshm-apitest")
        assert uevent["DEVNAME"] == "seqshm/apitest"
        assert uevent["DEVMODE"] == f"0{mode or 0o400:o}"
        assert f"{uevent['MAJOR']}:{uevent['MINOR']}" == (
            f"{os.major(os.stat(APITEST).st_rdev)}:{os.minor(os.stat(APITEST).st_rdev)}")


def test_readme_udev_rule_matches_its_channel(dev):
    """module/README.md's rule names a channel by the kernel name its device really has."""
    rules = re.findall(r'^\s*SUBSYSTEM=="([^"]+)", KERNEL=="([^"]+)", GROUP="([^"]+)", '
                       r'MODE="(0[0-7]+)"', README.read_text(), re.MULTILINE)
    assert rules, f"no udev rule in {README}"
    live = {channel_uevent(name)[:2] for name in ("cpustat", "selftest")}
    for subsystem, kernel, _group, mode in rules:
        assert any(fnmatch.fnmatchcase(k, kernel) and s == subsystem for s, k in live), (
            f"{subsystem=} {kernel=} matches none of {sorted(live)}")
        assert not int(mode, 8) & ~0o444, f"the README's rule gives {mode}"
