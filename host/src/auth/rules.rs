//! Authorization rules (`blockreg.access` in the config file), after zot's
//! access-control model: repository patterns, each granting actions to
//! users, groups, every authenticated user and anonymous callers, plus a
//! list of admins who may do everything everywhere.
//!
//! Pure: a decision is a function of (rules, user, repository, action).
//! When several patterns match a repository, the longest pattern (the most
//! specific) alone decides; a repository no pattern matches is open to
//! admins only.

use std::collections::BTreeMap;

use crate::bindings::Action;

/// A set of actions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Actions {
    /// Read.
    pub pull: bool,
    /// Write.
    pub push: bool,
    /// Delete.
    pub delete: bool,
}

impl Actions {
    /// Every action.
    pub const ALL: Actions = Actions {
        pull: true,
        push: true,
        delete: true,
    };

    /// Parses action names: `pull`, `push`, `delete`, or `*` for all.
    ///
    /// # Errors
    ///
    /// Names the first word that is none of these.
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut actions = Actions::default();
        for name in names {
            match name {
                "pull" => actions.pull = true,
                "push" => actions.push = true,
                "delete" => actions.delete = true,
                "*" => actions = Actions::ALL,
                other => {
                    return Err(format!(
                        "unknown action {other:?}; expected pull, push, delete or *"
                    ))
                }
            }
        }
        Ok(actions)
    }

    /// Whether `action` is in the set.
    pub(crate) fn contains(self, action: Action) -> bool {
        match action {
            Action::Pull => self.pull,
            Action::Push => self.push,
            Action::Delete => self.delete,
        }
    }

    fn union(self, other: Actions) -> Actions {
        Actions {
            pull: self.pull || other.pull,
            push: self.push || other.push,
            delete: self.delete || other.delete,
        }
    }
}

/// Actions granted to named users and to members of named groups.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// User names.
    pub users: Vec<String>,
    /// Group names (defined in [`AccessRules::groups`]).
    pub groups: Vec<String>,
    /// What they may do.
    pub actions: Actions,
}

/// What may be done in the repositories matching one pattern.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepositoryRule {
    /// A glob over repository names: `*` matches within one path segment,
    /// `**` across segments, `?` one character other than `/`.
    pub pattern: String,
    /// Grants to users and groups.
    pub policies: Vec<Policy>,
    /// Granted to every authenticated user.
    pub default: Actions,
    /// Granted to callers without credentials (and to everyone else).
    pub anonymous: Actions,
}

/// The whole `blockreg.access` section.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessRules {
    /// Group name → its members.
    pub groups: BTreeMap<String, Vec<String>>,
    /// Users who may do everything in every repository.
    pub admins: Vec<String>,
    /// Per-pattern rules.
    pub repositories: Vec<RepositoryRule>,
}

impl AccessRules {
    /// Whether `user` (`None`: anonymous) may do `action` on `repository`.
    pub(crate) fn allows(&self, user: Option<&str>, repository: &str, action: Action) -> bool {
        if user.is_some_and(|user| self.admins.iter().any(|admin| admin == user)) {
            return true;
        }
        let Some(rule) = self
            .repositories
            .iter()
            .filter(|rule| glob_matches(&rule.pattern, repository))
            .max_by_key(|rule| rule.pattern.len())
        else {
            return false;
        };
        let mut granted = rule.anonymous;
        if let Some(user) = user {
            granted = granted.union(rule.default);
            for policy in &rule.policies {
                if policy.users.iter().any(|u| u == user)
                    || policy.groups.iter().any(|g| self.is_member(user, g))
                {
                    granted = granted.union(policy.actions);
                }
            }
        }
        granted.contains(action)
    }

    fn is_member(&self, user: &str, group: &str) -> bool {
        self.groups
            .get(group)
            .is_some_and(|members| members.iter().any(|m| m == user))
    }
}

/// Whether `name` matches `pattern` (see [`RepositoryRule::pattern`]).
/// Dynamic programming over (pattern, name) positions: no backtracking,
/// so no pattern costs more than `pattern.len() * name.len()`.
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    #[derive(Clone, Copy)]
    enum Token {
        AnyDeep,
        AnyInSegment,
        One,
        Byte(u8),
    }
    let bytes = pattern.as_bytes();
    let mut tokens = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'*' if bytes.get(i + 1) == Some(&b'*') => {
                tokens.push(Token::AnyDeep);
                i += 2;
            }
            b'*' => {
                tokens.push(Token::AnyInSegment);
                i += 1;
            }
            b'?' => {
                tokens.push(Token::One);
                i += 1;
            }
            b => {
                tokens.push(Token::Byte(b));
                i += 1;
            }
        }
    }
    let name = name.as_bytes();
    // matched[j]: the tokens so far match name[..j].
    let mut matched = vec![false; name.len() + 1];
    matched[0] = true;
    for token in tokens {
        let mut next = vec![false; name.len() + 1];
        match token {
            Token::AnyDeep | Token::AnyInSegment => {
                let deep = matches!(token, Token::AnyDeep);
                for j in 0..=name.len() {
                    next[j] = matched[j] || (j > 0 && next[j - 1] && (deep || name[j - 1] != b'/'));
                }
            }
            Token::One => {
                for j in 1..=name.len() {
                    next[j] = matched[j - 1] && name[j - 1] != b'/';
                }
            }
            Token::Byte(b) => {
                for j in 1..=name.len() {
                    next[j] = matched[j - 1] && name[j - 1] == b;
                }
            }
        }
        matched = next;
    }
    matched[name.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_star_stays_within_one_segment() {
        assert!(glob_matches("library/*", "library/debian"));
        assert!(!glob_matches("library/*", "library/debian/slim"));
        assert!(!glob_matches("library/*", "library"));
        assert!(glob_matches("*", "debian"));
        assert!(!glob_matches("*", "a/b"));
        assert!(glob_matches("team-*/app", "team-a/app"));
        assert!(!glob_matches("team-*/app", "team-a/x/app"));
    }

    #[test]
    fn a_double_star_crosses_segments() {
        assert!(glob_matches("**", "a"));
        assert!(glob_matches("**", "a/b/c"));
        assert!(glob_matches("library/**", "library/debian/slim"));
        assert!(!glob_matches("library/**", "other/debian"));
        assert!(glob_matches("**/cache", "ci/builds/cache"));
        assert!(!glob_matches("**/cache", "ci/builds/cache2"));
    }

    #[test]
    fn literals_and_question_marks_match_exactly() {
        assert!(glob_matches("debian", "debian"));
        assert!(!glob_matches("debian", "debian2"));
        assert!(!glob_matches("debian", "debia"));
        assert!(glob_matches("v?", "v1"));
        assert!(!glob_matches("a?b", "a/b"));
    }

    #[test]
    fn many_stars_do_not_backtrack_exponentially() {
        let name = "a".repeat(200);
        let pattern = format!("{}b", "*a".repeat(30));
        assert!(!glob_matches(&pattern, &name));
    }

    fn rules() -> AccessRules {
        AccessRules {
            groups: [("devs".to_owned(), vec!["bob".to_owned()])].into(),
            admins: vec!["root".to_owned()],
            repositories: vec![
                RepositoryRule {
                    pattern: "**".to_owned(),
                    default: Actions::parse(["pull"]).unwrap(),
                    ..RepositoryRule::default()
                },
                RepositoryRule {
                    pattern: "public/**".to_owned(),
                    anonymous: Actions::parse(["pull"]).unwrap(),
                    policies: vec![Policy {
                        groups: vec!["devs".to_owned()],
                        actions: Actions::parse(["pull", "push"]).unwrap(),
                        ..Policy::default()
                    }],
                    ..RepositoryRule::default()
                },
                RepositoryRule {
                    pattern: "secret".to_owned(),
                    policies: vec![Policy {
                        users: vec!["carol".to_owned()],
                        actions: Actions::ALL,
                        ..Policy::default()
                    }],
                    ..RepositoryRule::default()
                },
            ],
        }
    }

    #[test]
    fn the_longest_matching_pattern_alone_decides() {
        let rules = rules();
        // "**" gives every user pull, but "secret" is more specific.
        assert!(rules.allows(Some("bob"), "any/thing", Action::Pull));
        assert!(!rules.allows(Some("bob"), "secret", Action::Pull));
        assert!(rules.allows(Some("carol"), "secret", Action::Delete));
    }

    #[test]
    fn groups_anonymous_and_admins_get_what_they_are_granted() {
        let rules = rules();
        assert!(rules.allows(Some("bob"), "public/x", Action::Push));
        assert!(!rules.allows(Some("eve"), "public/x", Action::Push));
        assert!(rules.allows(None, "public/x", Action::Pull));
        assert!(rules.allows(Some("eve"), "public/x", Action::Pull));
        assert!(!rules.allows(None, "public/x", Action::Push));
        assert!(!rules.allows(None, "other", Action::Pull));
        assert!(rules.allows(Some("root"), "secret", Action::Delete));
    }

    #[test]
    fn a_repository_no_pattern_matches_is_for_admins_only() {
        let rules = AccessRules {
            admins: vec!["root".to_owned()],
            ..AccessRules::default()
        };
        assert!(!rules.allows(Some("bob"), "x", Action::Pull));
        assert!(rules.allows(Some("root"), "x", Action::Push));
    }

    #[test]
    fn action_names_parse_and_unknown_ones_are_named() {
        assert_eq!(Actions::parse(["*"]).unwrap(), Actions::ALL);
        assert_eq!(
            Actions::parse(["pull", "delete"]).unwrap(),
            Actions {
                pull: true,
                push: false,
                delete: true
            }
        );
        assert!(Actions::parse(["read"]).unwrap_err().contains("\"read\""));
    }
}
