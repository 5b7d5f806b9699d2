//! French and English: the status page ([`L10n`]: every string, numbers
//! and dates in the reader's style, times in the fleet's time zone) and
//! the notifications ([`Notices`]: alert emails, webhook texts, the daily
//! digest, site events), in the fleet's language. Every French and English
//! word of the controller is here.

use jiff::Timestamp;

/// A page language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// Français.
    Fr,
    /// English.
    En,
}

impl Lang {
    /// `fr` / `en`.
    pub fn code(self) -> &'static str {
        match self {
            Self::Fr => "fr",
            Self::En => "en",
        }
    }

    /// From a cookie value or a path segment.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "fr" => Some(Self::Fr),
            "en" => Some(Self::En),
            _ => None,
        }
    }

    /// The first of `fr` / `en` in an `Accept-Language` header, by weight.
    pub fn from_accept_language(header: &str) -> Option<Self> {
        let mut best: Option<(f32, Self)> = None;
        for part in header.split(',') {
            let mut it = part.split(';');
            let tag = it.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = it
                .find_map(|p| {
                    p.trim()
                        .strip_prefix("q=")
                        .and_then(|v| v.parse::<f32>().ok())
                })
                .unwrap_or(1.0);
            let lang = match tag.split('-').next() {
                Some("fr") => Self::Fr,
                Some("en") => Self::En,
                _ => continue,
            };
            if best.is_none_or(|(bq, _)| q > bq) {
                best = Some((q, lang));
            }
        }
        best.map(|(_, l)| l)
    }
}

/// An agent phase (`converged`…) in `lang`; anything else as it is.
pub fn phase_word(phase: &str, lang: Lang) -> String {
    let (fr, en) = match phase {
        "starting" => ("démarrage", "starting"),
        "converged" => ("à jour", "converged"),
        "fetching" => ("téléchargement", "fetching"),
        "applying" => ("application", "applying"),
        "waiting" => ("en attente", "waiting"),
        "updating" => ("mise à jour", "updating"),
        "degraded" => ("dégradé", "degraded"),
        "stale" => ("périmé", "stale"),
        other => return other.to_owned(),
    };
    match lang {
        Lang::Fr => fr.to_owned(),
        Lang::En => en.to_owned(),
    }
}

/// What a page needs to speak the reader's language.
#[derive(Debug, Clone)]
pub struct L10n {
    /// The language.
    pub lang: Lang,
    /// The fleet's time zone.
    pub tz: jiff::tz::TimeZone,
    /// Now.
    pub now: Timestamp,
}

impl L10n {
    /// A fixed reader for tests: `lang`, Paris time, 2026-11-23 14:00 UTC.
    #[cfg(test)]
    pub(crate) fn for_tests(lang: Lang) -> Self {
        Self {
            lang,
            tz: jiff::tz::TimeZone::get("Europe/Paris")
                .expect("Europe/Paris is in the tz database"),
            now: "2026-11-23T14:00:00Z".parse().expect("a valid timestamp"),
        }
    }

    /// The string for `key` (the key itself when unknown, so a missing
    /// translation shows up in tests).
    pub fn t(&self, key: &str) -> &'static str {
        let (fr, en) = match key {
            "overview" => ("Vue d'ensemble", "Overview"),
            "sites" => ("Sites", "Sites"),
            "alerts" => ("Alertes", "Alerts"),
            "releases" => ("Versions", "Releases"),
            "logout" => ("Déconnexion", "Log out"),
            "login" => ("Connexion", "Log in"),
            "login_title" => ("Connexion à Touchline", "Log in to Touchline"),
            "token" => ("Jeton d'opérateur", "Operator token"),
            "login_failed" => (
                "Identifiants ou jeton refusés.",
                "Name, password, code or token refused.",
            ),
            "online" => ("En ligne", "Online"),
            "degraded" => ("Dégradé", "Degraded"),
            "offline" => ("Hors ligne", "Offline"),
            "stale" => ("Périmé", "Stale"),
            "overdue" => ("En retard", "Overdue"),
            "last_known" => ("dernier état connu", "last known"),
            "now_title" => ("En ce moment", "Right now"),
            "measured" => ("Mesuré", "Measured"),
            "uptime" => ("Allumé depuis", "Up for"),
            "location" => ("Lieu", "Location"),
            "hardware" => ("Matériel", "Hardware"),
            "os" => ("Système", "Operating system"),
            "agent_version" => ("Version de l'agent", "Agent version"),
            "gb" => ("Go", "GB"),
            "chart_last" => ("dernière valeur", "latest"),
            "chart_min" => ("min.", "lowest"),
            "chart_max" => ("max.", "highest"),
            "chart_points" => ("mesure(s)", "measurement(s)"),
            "ev_phase" => ("phase", "phase"),
            "ev_applied" => ("appliqué", "applied"),
            "ev_release" => ("version", "release"),
            "ev_rolled-back" => ("annulation", "rollback"),
            "ev_error" => ("erreur", "error"),
            "ev_alert" => ("alerte", "alert"),
            "ev_reset" => ("réinitialisation", "reset"),
            "colon" => (" :", ":"),
            "rollout" => ("Déploiement en vagues", "Rollout in waves"),
            "no_rollout" => (
                "Aucun déploiement en cours : le dernier commit n'a changé la version d'aucun site.",
                "No rollout: the last commit changed no site's release.",
            ),
            "policy_from" => ("règles de", "policy from"),
            "ro_moving" => ("en cours", "moving"),
            "ro_halted" => ("arrêté", "halted"),
            "ro_complete" => ("terminé", "complete"),
            "ro_superseded" => ("remplacé", "superseded"),
            "halted_at" => ("Arrêté le", "Halted at"),
            "halt_hint" => (
                "plus aucune vague ne s'ouvre. Reprendre (action tracée) ou corriger par un nouveau commit.",
                "no further wave opens. Resume (audited) or let a new commit decide.",
            ),
            "resume_rollout" => ("Reprendre le déploiement", "Resume the rollout"),
            "resumed_by" => ("Repris par", "Resumed by"),
            "wave" => ("Vague", "Wave"),
            "opened" => ("Ouverte", "Opened"),
            "passed" => ("Réussie", "Passed"),
            "next_wave" => ("Prochaine vague à partir de", "Next wave from"),
            "st_applied" => ("appliqué", "applied"),
            "st_waiting" => ("attend", "waiting"),
            "st_in_progress" => ("en cours", "in progress"),
            "st_rolled_back" => ("version annulée", "rolled back"),
            "st_failed" => ("en échec", "failed"),
            "st_unreachable" => ("injoignable", "unreachable"),
            "st_not_opened" => ("vague pas encore ouverte", "wave not opened"),
            "st_never" => ("jamais vu", "never reported"),
            "reason_phase" => ("phase", "phase"),
            "rule_temperature" => ("température", "temperature"),
            "rule_disk" => ("disque", "disk"),
            "rule_disk-free" => ("espace libre", "free space"),
            "rule_memory" => ("mémoire", "memory"),
            "rule_service-down" => ("service arrêté", "service down"),
            "rule_offline" => ("hors ligne", "offline"),
            "rule_apply-failed" => ("échec d'application", "apply failed"),
            "rule_rolled-back" => ("version annulée", "rolled back"),
            "rule_under-voltage" => ("sous-tension", "under-voltage"),
            "rule_read-only-root" => ("système en lecture seule", "read-only root"),
            "rule_release-behind" => ("version en retard", "release behind"),
            "total" => ("Sites", "Sites"),
            "versions" => ("Versions en service", "Versions running"),
            "active_alerts" => ("Alertes actives", "Active alerts"),
            "no_alerts" => ("Aucune alerte active.", "No active alert."),
            "last_commits" => ("Derniers commits", "Last commits"),
            "applied" => ("appliqué", "applied"),
            "commit_accepted" => ("accepté", "accepted"),
            "commit_refused" => ("refusé", "refused"),
            "blocked" => ("en attente", "pending"),
            "map" => ("Carte", "Map"),
            "health" => ("Santé", "Health"),
            "health_dist" => ("Répartition de la santé", "Health distribution"),
            "search" => ("Rechercher", "Search"),
            "filter" => ("Filtrer", "Filter"),
            "all" => ("Tous", "All"),
            "sport" => ("Sport", "Sport"),
            "region" => ("Région", "Region"),
            "group" => ("Groupe", "Group"),
            "status" => ("État", "Status"),
            "version" => ("Version", "Version"),
            "name" => ("Nom", "Name"),
            "last_seen" => ("Vu", "Last seen"),
            "never" => ("jamais", "never"),
            "cpu" => ("CPU", "CPU"),
            "memory" => ("Mémoire", "Memory"),
            "temperature" => ("Température", "Temperature"),
            "disk" => ("Disque", "Disk"),
            "phase" => ("Phase", "Phase"),
            "identity" => ("Identité", "Identity"),
            "club" => ("Club", "Club"),
            "labels" => ("Étiquettes", "Labels"),
            "groups" => ("Groupes", "Groups"),
            "desired" => ("Voulu", "Desired"),
            "running" => ("En place", "Applied"),
            "set_by" => ("défini par", "set by"),
            "bundle_videos" => ("Vidéos voulues", "Videos wanted"),
            "bundle_config" => (
                "Configuration voulue (configuration.json)",
                "Configuration wanted (configuration.json)",
            ),
            "path" => ("Chemin", "Path"),
            "added_by" => ("ajoutée par", "added by"),
            "key" => ("Clé", "Key"),
            "serial" => ("Numéro", "Serial"),
            "release" => ("Version logicielle", "Software release"),
            "videos" => ("Vidéos", "Videos"),
            "config" => ("Configuration", "Configuration"),
            "conditions" => ("Conditions", "Conditions"),
            "last_error" => ("Dernière erreur", "Last error"),
            "none" => ("aucune", "none"),
            "charts" => ("Courbes", "Charts"),
            "events" => ("Événements récents", "Recent events"),
            "export" => ("Exporter l'historique (CSV)", "Export history (CSV)"),
            "fleet_export" => (
                "Historique de tout le parc (CSV) :",
                "The whole fleet's history (CSV):",
            ),
            "rule" => ("Règle", "Rule"),
            "level" => ("Niveau", "Level"),
            "value" => ("Valeur", "Value"),
            "since" => ("Depuis", "Since"),
            "firing" => ("active", "firing"),
            "pending" => ("en attente", "pending"),
            "resolved" => ("résolue", "resolved"),
            "warning" => ("avertissement", "warning"),
            "critical" => ("critique", "critical"),
            "site" => ("Site", "Site"),
            "adoption" => ("Adoption", "Adoption"),
            "rolled_back" => ("Annulée sur", "Rolled back on"),
            "staged" => ("Préparée sur", "Staged on"),
            "on_trial" => ("À l'essai sur", "On trial on"),
            "agent_releases" => ("Versions de l'agent", "Agent releases"),
            "waiting" => ("En attente sur", "Waiting on"),
            "changelog" => ("Changements", "Changes"),
            "sync" => ("Synchroniser maintenant", "Sync now"),
            "enroll_box" => ("Enrôler un boîtier", "Enroll a box"),
            "enroll_hint" => (
                "un code à usage unique ; le boîtier reçoit un nouveau jeton de site",
                "a one-time code; the box gets a new site token",
            ),
            "enroll_title" => ("Code d'enrôlement", "Enrollment code"),
            "enroll_once" => (
                "Ce code n'est affiché qu'une fois et ne sert qu'une fois. Valable jusqu'au",
                "This code is shown once and works once. Valid until",
            ),
            "enroll_install" => (
                "Sur le boîtier (installe l'agent et l'enrôle) :",
                "On the box (installs the agent and enrolls it):",
            ),
            "enroll_installed" => (
                "Ou, si le paquet touchline-agent est déjà installé :",
                "Or, with the touchline-agent package already installed:",
            ),
            "sync_done" => ("Synchronisation lancée.", "Sync started."),
            "no_data" => ("Pas encore de mesures.", "No measurements yet."),
            "sites_count" => ("sites", "sites"),
            "language" => ("English", "Français"),
            "refresh" => ("Actualisé toutes les 60 s", "Refreshed every 60 s"),
            "refresh_paused" => ("Actualisation en pause", "Refresh paused"),
            "refresh_pause" => ("Mettre en pause", "Pause"),
            "refresh_resume" => ("Reprendre", "Resume"),
            "priority" => ("priorité", "priority"),
            "rule_members" => ("Règle", "Rule"),
            "members" => ("Membres", "Members"),
            "sets" => ("Ce que le groupe fixe", "What the group sets"),
            "remote_actions" => ("Actions à distance", "Remote actions"),
            "action" => ("Action", "Action"),
            "service" => ("Service", "Service"),
            "lines" => ("Lignes", "Lines"),
            "force" => (
                "Forcer (même pendant un match)",
                "Force (even during a match)",
            ),
            "request" => ("Demander", "Request"),
            "requested_by" => ("Demandé par", "Requested by"),
            "state" => ("État", "State"),
            "result" => ("Résultat", "Result"),
            "output" => ("Sortie", "Output"),
            "no_actions" => ("Aucune action demandée.", "No action requested."),
            "actions_hint" => (
                "Signée par le contrôleur, vérifiée par le boîtier ; redémarrage, relance et resync attendent la fin d'un match.",
                "Signed by the controller, checked by the box; reboot, restart and resync wait for the end of a match.",
            ),
            "on_selected" => ("Sur les sites cochés :", "On the checked sites:"),
            "select" => ("Choisir", "Select"),
            "audit" => ("Audit", "Audit"),
            "audit_title" => ("Journal d'audit", "Audit log"),
            "when" => ("Quand", "When"),
            "who" => ("Qui", "Who"),
            "what" => ("Quoi", "What"),
            "target" => ("Sur", "On"),
            "from" => ("D'où", "From"),
            "export_csv" => ("Exporter (CSV)", "Export (CSV)"),
            "action_queued" => ("Action demandée :", "Action requested:"),
            "account" => ("Compte", "Account"),
            "accounts" => ("Comptes", "Accounts"),
            "role" => ("Rôle", "Role"),
            "add_account" => ("Ajouter un compte", "Add an account"),
            "with_totp" => ("Avec code TOTP", "With a TOTP code"),
            "reset_password" => ("Nouveau mot de passe", "New password"),
            "remove" => ("Supprimer", "Remove"),
            "locked" => ("Verrouillé jusqu'au", "Locked until"),
            "created" => ("Créé", "Created"),
            "shown_once" => (
                "Affiché une seule fois : transmettez-le à la personne, elle pourra le changer avec l'administrateur.",
                "Shown once: give it to the person; an admin can set a new one at any time.",
            ),
            "totp_secret" => (
                "Secret TOTP (à saisir dans l'application d'authentification) :",
                "TOTP secret (for the authenticator app):",
            ),
            "password" => ("Mot de passe", "Password"),
            "totp_code" => (
                "Code à 6 chiffres (si le compte en a un)",
                "6-digit code (when the account has one)",
            ),
            "with_token" => ("Avec un jeton d'opérateur", "With an operator token"),
            "account_locked" => (
                "Compte verrouillé après trop d'échecs, jusqu'au",
                "Account locked after too many failures, until",
            ),
            _ => return "??",
        };
        match self.lang {
            Lang::Fr => fr,
            Lang::En => en,
        }
    }

    /// An agent phase (`converged`…) in the reader's language.
    pub fn phase(&self, phase: &str) -> String {
        phase_word(phase, self.lang)
    }

    /// The other language's code (for the switch link).
    pub fn other(&self) -> &'static str {
        match self.lang {
            Lang::Fr => "en",
            Lang::En => "fr",
        }
    }

    /// A number with `decimals`, in the reader's style (`78,2` / `78.2`).
    pub fn num(&self, v: f64, decimals: usize) -> String {
        let s = format!("{v:.decimals$}");
        match self.lang {
            Lang::Fr => s.replace('.', ","),
            Lang::En => s,
        }
    }

    /// An optional number, or `–`.
    pub fn opt(&self, v: Option<f64>, decimals: usize, unit: &str) -> String {
        v.map_or_else(
            || "–".to_owned(),
            |v| format!("{} {unit}", self.num(v, decimals)),
        )
    }

    /// A time in the fleet's time zone (`23/11/2026 14:05` / `2026-11-23 14:05`).
    pub fn time(&self, t: &Timestamp) -> String {
        let z = t.to_zoned(self.tz.clone());
        match self.lang {
            Lang::Fr => z.strftime("%d/%m/%Y %H:%M").to_string(),
            Lang::En => z.strftime("%Y-%m-%d %H:%M").to_string(),
        }
    }

    /// How long ago (`il y a 3 min` / `3 min ago`).
    pub fn ago(&self, t: &Timestamp) -> String {
        let s = self.now.duration_since(*t).as_secs().max(0);
        let span = if s < 60 {
            format!("{s} s")
        } else if s < 3600 {
            format!("{} min", s / 60)
        } else if s < 86_400 {
            format!("{} h", s / 3600)
        } else {
            match self.lang {
                Lang::Fr => format!("{} j", s / 86_400),
                Lang::En => format!("{} d", s / 86_400),
            }
        };
        match self.lang {
            Lang::Fr => format!("il y a {span}"),
            Lang::En => format!("{span} ago"),
        }
    }

    /// `label : value` / `label: value`.
    pub fn pair(&self, label: &str, value: &str) -> String {
        match self.lang {
            Lang::Fr => format!("{label} : {value}"),
            Lang::En => format!("{label}: {value}"),
        }
    }

    /// A length of time (`3 j 4 h` / `3 d 4 h`, `12 min`, `40 s`).
    pub fn span(&self, secs: u64) -> String {
        let day = match self.lang {
            Lang::Fr => "j",
            Lang::En => "d",
        };
        match secs {
            s if s < 60 => format!("{s} s"),
            s if s < 3600 => format!("{} min", s / 60),
            s if s < 86_400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
            s => format!("{} {day} {} h", s / 86_400, s % 86_400 / 3600),
        }
    }

    /// `ago` of an optional time, or "never".
    pub fn ago_opt(&self, t: &Option<Timestamp>) -> String {
        t.as_ref()
            .map_or_else(|| self.t("never").to_owned(), |t| self.ago(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(lang: Lang) -> L10n {
        L10n::for_tests(lang)
    }

    #[test]
    fn accept_language_picks_by_weight() {
        assert_eq!(
            Lang::from_accept_language("fr-FR,fr;q=0.9,en;q=0.8"),
            Some(Lang::Fr)
        );
        assert_eq!(
            Lang::from_accept_language("de-DE, en-GB;q=0.7, fr;q=0.3"),
            Some(Lang::En)
        );
        assert_eq!(Lang::from_accept_language("de, es"), None);
    }

    #[test]
    fn numbers_dates_and_ages_in_the_readers_style() {
        let t: Timestamp = "2026-11-23T13:57:00Z".parse().unwrap();
        assert_eq!(l(Lang::Fr).num(78.25, 1), "78,2");
        assert_eq!(l(Lang::En).num(78.25, 1), "78.2");
        assert_eq!(l(Lang::Fr).time(&t), "23/11/2026 14:57");
        assert_eq!(l(Lang::En).time(&t), "2026-11-23 14:57");
        assert_eq!(l(Lang::Fr).ago(&t), "il y a 3 min");
        assert_eq!(l(Lang::En).ago(&t), "3 min ago");
        assert_eq!(l(Lang::Fr).span(3 * 86_400 + 4 * 3600 + 5), "3 j 4 h");
        assert_eq!(l(Lang::En).span(3 * 86_400 + 4 * 3600 + 5), "3 d 4 h");
        assert_eq!(l(Lang::En).span(3725), "1 h 2 min");
        assert_eq!(l(Lang::En).span(40), "40 s");
    }

    #[test]
    fn every_key_used_by_the_templates_is_translated() {
        let templates = [
            include_str!("../templates/layout.html"),
            include_str!("../templates/login.html"),
            include_str!("../templates/overview.html"),
            include_str!("../templates/sites.html"),
            include_str!("../templates/site.html"),
            include_str!("../templates/alerts.html"),
            include_str!("../templates/releases.html"),
            include_str!("../templates/groups.html"),
        ];
        for text in templates {
            for part in text.split("l.t(\"").skip(1) {
                let key = &part[..part.find('"').unwrap()];
                assert_ne!(l(Lang::Fr).t(key), "??", "no translation for `{key}`");
            }
        }
    }
}

/// The notifications' words, in the fleet's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Notices(pub touchline_schemas::manifest::Language);

impl Notices {
    fn fr(self) -> bool {
        self.0 == touchline_schemas::manifest::Language::Fr
    }

    /// A word or label (`site`, `alert`, `value`, `level`, `state`, `rule`,
    /// `since`, `none`, the levels and states).
    pub fn t(self, key: &str) -> &'static str {
        let (fr, en) = match key {
            "site" => ("Site", "Site"),
            "alert" => ("Alerte", "Alert"),
            "value" => ("Valeur", "Value"),
            "level" => ("Niveau", "Level"),
            "state" => ("État", "State"),
            "rule" => ("Règle", "Rule"),
            "since" => ("Depuis", "Since"),
            "none" => ("aucune", "none"),
            "firing" => ("active", "firing"),
            "resolved" => ("résolue", "resolved"),
            "warning" => ("avertissement", "warning"),
            "critical" => ("critique", "critical"),
            "tag_resolved" => ("RÉSOLU", "RESOLVED"),
            "tag_warning" => ("WARNING", "WARNING"),
            "tag_critical" => ("CRITICAL", "CRITICAL"),
            "digest_warning" => ("AVERTISSEMENT", "WARNING"),
            "digest_critical" => ("CRITIQUE", "CRITICAL"),
            "event_critical" => ("alerte critique", "critical alert"),
            "event_warning" => ("avertissement", "warning"),
            "event_resolved" => ("alerte résolue", "alert resolved"),
            _ => return "",
        };
        if self.fr() { fr } else { en }
    }

    /// `label : value` / `label: value`.
    pub fn pair(self, label: &str, value: &str) -> String {
        if self.fr() {
            format!("{label} : {value}")
        } else {
            format!("{label}: {value}")
        }
    }

    /// A date (`01/12/2026` / `2026-12-01`).
    pub fn date(self, z: &jiff::Zoned) -> String {
        z.strftime(if self.fr() { "%d/%m/%Y" } else { "%Y-%m-%d" })
            .to_string()
    }

    /// A day and time (`01/12 08:00` / `12-01 08:00`).
    pub fn day_time(self, z: &jiff::Zoned) -> String {
        z.strftime(if self.fr() {
            "%d/%m %H:%M"
        } else {
            "%m-%d %H:%M"
        })
        .to_string()
    }

    /// A digest line: `CRITIQUE Cesson : trop chaud (depuis 01/12 08:00)`.
    pub fn digest_line(self, level: &str, name: &str, message: &str, since: &str) -> String {
        if self.fr() {
            format!("{level} {name} : {message} (depuis {since})")
        } else {
            format!("{level} {name}: {message} (since {since})")
        }
    }

    /// The digest's subject.
    pub fn digest_subject(
        self,
        date: &str,
        fleet: &str,
        firing: usize,
        offline: usize,
        total: usize,
    ) -> String {
        if self.fr() {
            format!(
                "[Touchline] Résumé du {date} — {fleet} : {firing} alerte(s) active(s), {offline} site(s) hors ligne sur {total}"
            )
        } else {
            format!(
                "[Touchline] Digest for {date} — {fleet}: {firing} firing alert(s), {offline} of {total} site(s) offline"
            )
        }
    }

    /// The digest's site counts.
    pub fn digest_counts(
        self,
        total: usize,
        online: usize,
        degraded: usize,
        offline: usize,
    ) -> String {
        if self.fr() {
            format!(
                "{total} sites : {online} en ligne, {degraded} dégradé(s), {offline} hors ligne"
            )
        } else {
            format!("{total} sites: {online} online, {degraded} degraded, {offline} offline")
        }
    }

    /// The digest's last 24 hours.
    pub fn digest_last_day(self, fired: usize, resolved: usize) -> String {
        if self.fr() {
            format!("Dernières 24 h : {fired} alerte(s) déclenchée(s), {resolved} résolue(s).")
        } else {
            format!("Last 24 h: {fired} alert(s) fired, {resolved} resolved.")
        }
    }

    /// The digest's title of the firing alerts.
    pub fn digest_firing_title(self, n: usize) -> String {
        if self.fr() {
            format!("Alertes actives ({n}) :")
        } else {
            format!("Firing alerts ({n}):")
        }
    }
}
