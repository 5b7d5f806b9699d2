//! `touchline import-neopro`: NEOPRO's site.conf files (both forms) into
//! site manifests that validate; the corpus under `tests/data/bad-neopro/`
//! (each case: its `*.conf` files and the exact error line in `expect`)
//! is refused with that line and writes nothing.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use common::touchline;

fn confs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "conf"))
        .collect();
    v.sort();
    v
}

#[test]
fn bad_site_conf_files_are_refused_naming_file_and_line_and_nothing_is_written() {
    let corpus = touchline_testkit::data("bad-neopro");
    let mut cases = 0;
    for case in std::fs::read_dir(&corpus).unwrap() {
        let case = case.unwrap().path();
        let out_dir = tempfile::tempdir().unwrap();
        let names: Vec<PathBuf> = confs(&case)
            .iter()
            .map(|p| PathBuf::from(p.file_name().unwrap()))
            .collect();
        let out = touchline()
            .current_dir(&case)
            .arg("import-neopro")
            .args(&names)
            .arg("--out")
            .arg(out_dir.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        let want = std::fs::read_to_string(case.join("expect")).unwrap();
        assert_eq!(out.status.code(), Some(1), "{}: {err}", case.display());
        assert!(
            err.lines().any(|l| l == want.trim()),
            "{}: wanted `{}` in:\n{err}",
            case.display(),
            want.trim()
        );
        assert!(err.contains("nothing was written"), "{err}");
        assert_eq!(
            std::fs::read_dir(out_dir.path()).unwrap().count(),
            0,
            "{}: nothing written",
            case.display()
        );
        cases += 1;
    }
    assert!(cases >= 6, "{cases} cases");
}

#[test]
fn three_field_files_become_sites_that_validate_with_a_report_of_what_did_not_map() {
    let files = touchline_testkit::ControllerFiles::example();
    let repo = files.repo_dir();
    let neopro = touchline_testkit::data("neopro");
    let out = touchline()
        .arg("import-neopro")
        .arg(&neopro)
        .arg("--out")
        .arg(&repo)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("wrote 3 sites"), "{said}");
    // The report: the secret is named, not copied; box-side keys are
    // left to the agent; a second sport and the update hour are named.
    for want in [
        "SITE_API_KEY (line 7): a secret of the old system, not copied",
        "central.api_key (line 13): a secret of the old system, not copied",
        "on the box, `touchline-agent enroll --from-neopro` carries: NEOPRO_ROOT, VIDEOS_PATH, CONFIG_PATH, MAX_DOWNLOAD_SIZE",
        "`sport` is football, not mapped: futsal",
        "AUTO_UPDATE_HOUR=3 (line 34): not mapped",
        "missing LOCATION_REGION: location.region is empty, fill it",
        "missing CLUB_NAME: club is the name",
        "features.telemetry (line 18): not mapped",
    ] {
        assert!(said.contains(want), "wanted `{want}` in:\n{said}");
    }
    let rennes = std::fs::read_to_string(repo.join("sites/rennes-fc-b827eb3f9a12.yaml")).unwrap();
    assert!(
        !rennes.contains("3f9a12c4-5b7e"),
        "the API key is not copied"
    );
    let se =
        std::fs::read_to_string(repo.join("sites/etoile-sportive-de-saint-etienne.yaml")).unwrap();
    assert!(
        se.contains("name: \"Saint-Étienne — gymnase Jean-Macé\""),
        "{se}"
    );
    assert!(se.contains("region: auvergne-rhone-alpes"), "{se}");
    assert!(
        se.contains("# The site.conf's id was \"Étoile Sportive de Saint-Étienne\"."),
        "{se}"
    );
    let site: serde_yaml::Value = serde_yaml::from_str(&se).unwrap();
    assert_eq!(site["location"]["city"].as_str(), Some("Saint-Étienne"));
    assert_eq!(site["labels"]["sport"].as_str(), Some("handball"));

    // The fleet validates, with a warning for each site's coordinates.
    let v = touchline().arg("validate").arg(&repo).output().unwrap();
    let text = String::from_utf8_lossy(&v.stdout);
    assert!(v.status.success(), "{text}");
    assert_eq!(
        text.matches("latitude and longitude are 0, 0").count(),
        3,
        "{text}"
    );
    assert!(text.contains("location.region is empty"), "{text}");

    // Again, without --force: refused, the reviewed files stay.
    std::fs::write(repo.join("sites/chateaubriant-basket.yaml"), "# reviewed\n").unwrap();
    let again = touchline()
        .arg("import-neopro")
        .arg(&neopro)
        .arg("--out")
        .arg(&repo)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains(
            "exists (site `chateaubriant-basket` is in the manifests already); pass --force"
        ),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(repo.join("sites/chateaubriant-basket.yaml")).unwrap(),
        "# reviewed\n"
    );
}
