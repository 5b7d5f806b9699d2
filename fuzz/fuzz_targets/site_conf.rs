//! A NEOPRO site.conf as `touchline import-neopro` and `touchline-agent
//! enroll --from-neopro` read it (files from club boxes): it reads or is
//! refused with a line inside the file, and every site it maps to is YAML
//! that reads back as a site manifest with the same id and names. The same
//! bytes, as text, as a typed enrollment code: parsed or refused, and a
//! parsed code shows as itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use touchline_controller::import::read_one;
use touchline_schemas::enroll::EnrollCode;
use touchline_schemas::manifest::Site;
use touchline_schemas::neopro::SiteConf;

fuzz_target!(|data: &[u8]| {
    let lines = data.iter().filter(|&&b| b == b'\n').count() + 1;
    match SiteConf::parse(data) {
        Err(e) => assert!(e.line >= 1 && e.line <= lines, "line {} of {lines}", e.line),
        Ok(conf) => {
            if let Ok((site, line)) = read_one(std::path::Path::new("site.conf"), data) {
                assert!(line <= lines);
                let back: Site = serde_yaml::from_str(&site.yaml)
                    .unwrap_or_else(|e| panic!("{e}\n{}", site.yaml));
                assert_eq!(back.id, site.id);
                if let Some(name) = conf.get(touchline_schemas::neopro::Field::Name) {
                    assert_eq!(back.name, name);
                }
            }
        }
    }
    let text = String::from_utf8_lossy(data);
    if let Ok(code) = EnrollCode::parse(&text) {
        assert_eq!(EnrollCode::parse(&code.reveal()).ok(), Some(code));
    }
});
