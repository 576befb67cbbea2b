//! Errors that name the fix: the exact messages (golden), for no Podman, a
//! refused permission, a missing image and a foreign container holding a
//! lane's name.

use std::os::unix::fs::PermissionsExt;

use crate::common::{Lanes, host, image, podman};

#[test]
fn no_podman_names_the_url_and_the_commands_that_start_one() {
    let lanes = Lanes::new("err-podman");
    lanes.write("a", &lanes.worker_lane(""));
    let run = lanes.lanectl_without_podman(Some("unix:///nonexistent/podman.sock"), &["apply"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(
        run.stderr,
        "lanectl: cannot reach podman at unix:///nonexistent/podman.sock: error trying to connect: \
         No such file or directory (os error 2)\n\
         start Podman's API service: `systemctl enable --now podman.socket` (as root; rootless: \
         `systemctl --user enable --now podman.socket`), or point --podman or CONTAINER_HOST at one \
         that runs (e.g. unix:///run/podman/podman.sock)\n"
    );
}

#[test]
fn a_refused_permission_names_the_exact_chmod() {
    let lanes = Lanes::new("err-perm");
    lanes.write("a", &lanes.worker_lane(""));
    let path = lanes.dir().join("a.yaml");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o664)).unwrap();
    let run = lanes.lanectl_offline(&["validate"]);
    assert_eq!(run.code, 1, "{run:?}");
    let p = path.display();
    assert_eq!(
        run.stdout,
        format!(
            "{p}: writable by group or others (mode 664): refused because lanectl runs as root \
             (fix: chmod go-w {p}, or pass --allow-insecure-permissions)\n"
        )
    );
}

#[test]
fn a_missing_image_says_how_to_build_or_load_it() {
    let lanes = Lanes::new("err-image");
    lanes.write(
        "a",
        &lanes
            .worker_lane("")
            .replace(&image(), "localhost/lanectl-err-image:1"),
    );
    let run = lanes.lanectl(&["plan"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(
        run.stdout,
        format!(
            "a  failed: image localhost/lanectl-err-image:1 is not present in the Podman at {}; \
             lanectl never pulls: build it there (`podman build -t localhost/lanectl-err-image:1 DIR`) \
             or load it (`podman save localhost/lanectl-err-image:1 > image.tar` where it exists, then \
             `podman load -i image.tar`)\n",
            host()
        )
    );
}

#[test]
fn a_foreign_container_holding_a_lanes_name_is_named_with_the_two_ways_out() {
    let lanes = Lanes::new("err-foreign");
    let name = format!("{}-foreign", lanes.instance);
    let id = podman(&["create", "--name", &name, &image(), "/bin/sh"]);
    let id = id.trim().to_string();
    lanes.write(
        "a",
        &lanes.worker_lane(&format!("container_name: {name}\n")),
    );
    let run = lanes.lanectl(&["apply"]);
    podman(&["rm", "-f", &id]);
    assert_eq!(run.code, 1, "{run:?}");
    let short = &id[..12];
    assert_eq!(
        run.stdout,
        format!(
            "a  failed: create: container name {name} is held by container {short} without a lanectl \
             instance label, not by this instance ({instance}); lanectl leaves it alone. Either free the \
             name (`podman rm -f {name}`, or `podman rename {name} NEW` to keep it) or give this lane \
             another container_name\n",
            instance = lanes.instance
        )
    );
}
