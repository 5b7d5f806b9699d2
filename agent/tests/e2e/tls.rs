//! TLS: a controller behind nginx with a certificate from a private CA.

use super::*;

/// A private CA and a certificate it issued for `localhost` (not for
/// 127.0.0.1), made with the openssl command line: (ca.pem, cert, key).
fn private_ca(openssl: &Path, dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ossl = |args: &[&str]| {
        run(Command::new(openssl).args(args).current_dir(dir));
    };
    ossl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=Touchline test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    ossl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    ossl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

#[test]
fn a_controller_behind_tls_is_reached_with_its_private_ca_and_refused_without() {
    let (Some(nginx), Some(openssl)) = (
        require_tool_at("nginx", &["/usr/sbin/nginx"], "apt-get install nginx"),
        require_tool_at("openssl", &["/usr/bin/openssl"], "apt-get install openssl"),
    ) else {
        return;
    };
    let w = World::new();
    let c = w.start("127.0.0.1:0");
    let tls = w.path("tls");
    std::fs::create_dir_all(&tls).unwrap();
    let (ca, cert, key) = private_ca(&openssl, &tls);
    // nginx terminates TLS in front of the controller with the site file
    // docs/install.md tells operators to use; long-polls pass through.
    let port = touchline_testkit::free_port();
    let t = tls.display();
    let site = std::fs::read_to_string(
        touchline_testkit::repo_root().join("packaging/controller/nginx-touchline.conf"),
    )
    .unwrap();
    let site = site
        .replace("    listen [::]:443 ssl;\n", "")
        .replace("listen 443 ssl;", &format!("listen 127.0.0.1:{port} ssl;"))
        .replace(
            "server_name touchline.example.org;",
            "server_name localhost;",
        )
        .replace(
            "/etc/letsencrypt/live/touchline.example.org/fullchain.pem",
            &cert.display().to_string(),
        )
        .replace(
            "/etc/letsencrypt/live/touchline.example.org/privkey.pem",
            &key.display().to_string(),
        )
        .replace("http://127.0.0.1:8080", &c.url);
    assert!(site.contains(&c.url) && site.contains(&format!(":{port} ssl")));
    std::fs::write(tls.join("touchline.conf"), site).unwrap();
    std::fs::write(
        tls.join("nginx.conf"),
        format!(
            "worker_processes 1;\ndaemon off;\npid {t}/nginx.pid;\nerror_log {t}/nginx-error.log warn;\nevents {{ worker_connections 64; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {t}/nb; proxy_temp_path {t}/np; fastcgi_temp_path {t}/nf; uwsgi_temp_path {t}/nu; scgi_temp_path {t}/ns;\n  include {t}/touchline.conf;\n}}\n"
        ),
    )
    .unwrap();
    let proxy = Killed(
        Command::new(&nginx)
            .arg("-c")
            .arg(tls.join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let proxy_url = format!("https://localhost:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nginx did not start: {}",
            std::fs::read_to_string(tls.join("nginx-error.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Without the CA: refused, with the reason; nothing applied.
    let cfg = w.agent_config("box", "brest-basket", Some(&proxy_url), "");
    let out = agent(&["once"], &cfg);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("invalid peer certificate: UnknownIssuer"),
        "{}",
        stderr(&out)
    );
    assert!(!w.path("box/app/configuration.json").exists());
    let out = agent(&["diagnose"], &cfg);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("FAIL tls + http") && text.contains("set ca_file to that CA's PEM"),
        "{text}"
    );

    // With ca_file: the bundle, its signature, the videos and the reports
    // all go over TLS; the box converges.
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("{text}ca_file = \"{}\"\n", ca.display())).unwrap();
    let out = agent(&["once"], &cfg);
    assert!(out.status.success(), "{}", stderr(&out));
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.path("box/app/configuration.json")).unwrap())
            .unwrap();
    assert_eq!(
        config["club"]["name"], "Union Sportive Brestoise Basket",
        "{config}"
    );
    assert!(!tree(&w.path("box/videos")).is_empty());
    let out = agent(&["diagnose"], &cfg);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    assert!(text.contains("OK   tls + http"), "{text}");
    assert!(text.contains("OK   token: accepted"), "{text}");
    // The report reached the controller through the proxy.
    let site: serde_json::Value = http()
        .get(format!("{}/api/sites/brest-basket", c.url))
        .bearer_auth(
            std::fs::read_to_string(w.path("data").join("local-admin.token"))
                .unwrap()
                .trim(),
        )
        .send()
        .unwrap()
        .text()
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap();
    assert!(site["report"]["seq"].as_u64().is_some(), "{site}");

    // The certificate names localhost, not 127.0.0.1: refused even with
    // the CA.
    let box2 = w.path("box2");
    std::fs::create_dir_all(&box2).unwrap();
    let cfg2 = box2.join("agent.toml");
    std::fs::write(
        &cfg2,
        std::fs::read_to_string(&cfg)
            .unwrap()
            .replace(&proxy_url, &format!("https://127.0.0.1:{port}"))
            .replace(
                &w.path("box").display().to_string(),
                &box2.display().to_string(),
            ),
    )
    .unwrap();
    let out = agent(&["once"], &cfg2);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("certificate not valid for name \"127.0.0.1\""),
        "{}",
        stderr(&out)
    );
    assert!(!w.path("box2/app/configuration.json").exists());

    // Behind the proxy, install.sh names the https address boxes use.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let https = reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap())
        .build()
        .unwrap();
    let script = https
        .get(format!("{proxy_url}/install.sh"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        script.contains(&format!("url='https://localhost:{port}'")),
        "{script}"
    );
    drop(proxy);
}
