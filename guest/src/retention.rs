//! Tag retention rules (Harbor's tag retention, zot's retention policies):
//! which tags of a repository a rule keeps. Pure: the collection
//! (`gc.rs`) lists tags with the time each was last written and removes
//! what the rule does not keep.
//!
//! A rule covers repositories by glob (`*` within one path component,
//! `**` across components, `?` one character); the first rule covering a
//! repository applies, and a repository no rule covers keeps every tag.
//! A rule keeps the union of what its criteria keep: the `keep-last` most
//! recently written tags, tags written within `keep-within`, and tags
//! matching a `keep-tags` pattern; a rule with none of them keeps every
//! tag. With `delete-untagged-after`, it also removes the manifests of the
//! repositories it covers that no tag reaches once unused for that long
//! (`gc.rs`, marking). A rule that does nothing would be a mistake (and
//! one with only an empty tag criterion would remove every tag, which is
//! never what an operator meant): both are refused.

use std::collections::HashSet;

use regex_lite::Regex;

/// One rule, validated.
#[derive(Debug, Clone)]
pub struct Rule {
    repositories: Vec<String>,
    keep_last: Option<u32>,
    keep_within: Option<u64>,
    keep_tags: Vec<Regex>,
    delete_untagged_after: Option<u64>,
}

impl Rule {
    /// Validates a rule as the operator wrote it (`delete_untagged_after`
    /// in seconds).
    ///
    /// # Errors
    /// A text naming what is wrong: no repository pattern, an empty or
    /// malformed one, a tag pattern that does not compile, nothing to do.
    pub fn new(
        repositories: Vec<String>,
        keep_last: Option<u32>,
        keep_within: Option<u64>,
        keep_tags: &[String],
        delete_untagged_after: Option<u64>,
    ) -> Result<Self, String> {
        if repositories.is_empty() {
            return Err("a retention rule names no repositories".into());
        }
        if let Some(bad) = repositories
            .iter()
            .find(|p| p.is_empty() || p.starts_with('/') || p.ends_with('/'))
        {
            return Err(format!(
                "retention rule repository pattern {bad:?} is not a glob over repository names"
            ));
        }
        let keep_tags = keep_tags
            .iter()
            .map(|t| {
                // Anchored: the pattern matches the whole tag.
                Regex::new(&format!("^(?:{t})$"))
                    .map_err(|e| format!("retention rule tag pattern {t:?}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let tag_criteria = keep_last.is_some() || keep_within.is_some() || !keep_tags.is_empty();
        if !tag_criteria && delete_untagged_after.is_none() {
            return Err(format!(
                "the retention rule for {repositories:?} does nothing (give keep-last, keep-within, keep-tags or delete-untagged-after)"
            ));
        }
        Ok(Self {
            repositories,
            keep_last,
            keep_within,
            keep_tags,
            delete_untagged_after,
        })
    }

    /// After how many seconds unused the manifests no tag reaches go, in
    /// the repositories this rule covers.
    pub fn delete_untagged_after(&self) -> Option<u64> {
        self.delete_untagged_after
    }

    /// Whether the rule covers repository `name`.
    pub fn covers(&self, name: &str) -> bool {
        self.repositories
            .iter()
            .any(|p| glob_match(p.as_bytes(), name.as_bytes()))
    }

    /// The tags this rule keeps, of `tags` as `(tag, written at)` in Unix
    /// seconds, at time `now`.
    pub fn kept<'a>(&self, tags: &'a [(String, u64)], now: u64) -> HashSet<&'a str> {
        if self.keep_last.is_none() && self.keep_within.is_none() && self.keep_tags.is_empty() {
            // Only about untagged manifests.
            return tags.iter().map(|(t, _)| t.as_str()).collect();
        }
        let mut kept = HashSet::new();
        if let Some(n) = self.keep_last {
            let mut newest: Vec<&(String, u64)> = tags.iter().collect();
            // Newest first; equal times by name, so the choice is stable.
            newest.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            kept.extend(newest.iter().take(n as usize).map(|(t, _)| t.as_str()));
        }
        if let Some(within) = self.keep_within {
            let since = now.saturating_sub(within);
            kept.extend(
                tags.iter()
                    .filter(|(_, at)| *at >= since)
                    .map(|(t, _)| t.as_str()),
            );
        }
        kept.extend(
            tags.iter()
                .filter(|(t, _)| self.keep_tags.iter().any(|re| re.is_match(t)))
                .map(|(t, _)| t.as_str()),
        );
        kept
    }
}

/// The first rule covering `repository`.
pub fn rule_for<'a>(rules: &'a [Rule], repository: &str) -> Option<&'a Rule> {
    rules.iter().find(|r| r.covers(repository))
}

/// Glob match over a whole repository name: `**` any run of characters,
/// `*` any run without `/`, `?` one character but `/`, anything else
/// itself.
fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    match pattern {
        [] => name.is_empty(),
        [b'*', b'*', rest @ ..] => {
            // `**/` also matches no component at all (`a/**/b` ~ `a/b`).
            if let [b'/', after @ ..] = rest {
                if glob_match(after, name) {
                    return true;
                }
            }
            (0..=name.len()).any(|i| glob_match(rest, &name[i..]))
        }
        [b'*', rest @ ..] => {
            let stop = name.iter().position(|&c| c == b'/').unwrap_or(name.len());
            (0..=stop).any(|i| glob_match(rest, &name[i..]))
        }
        [b'?', rest @ ..] => matches!(name, [c, tail @ ..] if *c != b'/' && glob_match(rest, tail)),
        [p, rest @ ..] => matches!(name, [c, tail @ ..] if c == p && glob_match(rest, tail)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(repos: &[&str], last: Option<u32>, within: Option<u64>, tags: &[&str]) -> Rule {
        Rule::new(
            repos.iter().map(|s| (*s).to_string()).collect(),
            last,
            within,
            &tags.iter().map(|s| (*s).to_string()).collect::<Vec<_>>(),
            None,
        )
        .unwrap()
    }

    #[test]
    fn globs_match_whole_names_and_star_stays_in_its_component() {
        assert!(glob_match(b"ci/*", b"ci/app"));
        assert!(!glob_match(b"ci/*", b"ci/app/x"));
        assert!(glob_match(b"ci/**", b"ci/app/x"));
        assert!(glob_match(b"**/cache", b"a/b/cache"));
        assert!(glob_match(b"**/cache", b"cache"));
        assert!(glob_match(b"a/**/b", b"a/b"));
        assert!(glob_match(b"team-?/app", b"team-1/app"));
        assert!(!glob_match(b"team-?/app", b"team-10/app"));
        assert!(!glob_match(b"ci", b"ci/app"), "no implicit prefix match");
        assert!(glob_match(b"**", b"anything/at/all"));
    }

    #[test]
    fn a_rule_keeps_the_union_of_its_criteria() {
        let tags: Vec<(String, u64)> = [
            ("v1", 100),
            ("v2", 200),
            ("v3", 300),
            ("latest", 50),
            ("old", 10),
        ]
        .iter()
        .map(|(t, at)| ((*t).to_string(), *at))
        .collect();
        let r = rule(&["**"], Some(2), None, &["latest"]);
        let mut kept: Vec<_> = r.kept(&tags, 1000).into_iter().collect();
        kept.sort_unstable();
        assert_eq!(kept, ["latest", "v2", "v3"]);
        let r = rule(&["**"], None, Some(200), &[]);
        let mut kept: Vec<_> = r.kept(&tags, 400).into_iter().collect();
        kept.sort_unstable();
        assert_eq!(kept, ["v2", "v3"], "written within 200 s of 400");
    }

    #[test]
    fn tag_patterns_match_whole_tags() {
        let r = rule(&["**"], None, None, &["v[0-9]+"]);
        let tags = vec![("v12".to_string(), 0), ("v12-rc".to_string(), 0)];
        assert_eq!(r.kept(&tags, 0).into_iter().collect::<Vec<_>>(), ["v12"]);
    }

    #[test]
    fn rules_that_keep_nothing_or_do_not_parse_are_refused() {
        assert!(Rule::new(vec!["ci/*".into()], None, None, &[], None).is_err());
        assert!(Rule::new(vec![], Some(1), None, &[], None).is_err());
        assert!(Rule::new(vec!["ci/*".into()], None, None, &["(".into()], None).is_err());
        assert!(Rule::new(vec!["/abs".into()], Some(1), None, &[], None).is_err());
    }

    #[test]
    fn a_rule_only_about_untagged_manifests_keeps_every_tag() {
        let r = Rule::new(vec!["ci/*".into()], None, None, &[], Some(3600)).unwrap();
        let tags = vec![("a".to_string(), 0), ("b".to_string(), 5)];
        assert_eq!(r.kept(&tags, 1_000_000).len(), 2);
        assert_eq!(r.delete_untagged_after(), Some(3600));
    }

    #[test]
    fn the_first_rule_covering_a_repository_applies() {
        let rules = vec![
            rule(&["ci/keep"], Some(100), None, &[]),
            rule(&["ci/*"], Some(1), None, &[]),
        ];
        assert_eq!(rule_for(&rules, "ci/keep").unwrap().keep_last, Some(100));
        assert_eq!(rule_for(&rules, "ci/other").unwrap().keep_last, Some(1));
        assert!(rule_for(&rules, "prod/app").is_none());
    }
}
