//! Authorization for applications — the model (groundwork of issue 15): resources × actions × rows
//! (end-user tiers, team roles, the application's own roles), each cell a set of permissions with a
//! condition on the object (`own`, `team`, `assigned`, `all`) and, for `create`, an optional monthly
//! quota. The seed's permission matrix is written in words ("Create 3/mo", "View own", "Full CRUD",
//! "As assigned", "Manage"); [`parse_cell`] is the one canonical reading of those words.

use std::collections::BTreeMap;
use std::fmt;

/// What a caller wants to do to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Make a new object (it is the caller's own).
    Create,
    /// Read an object.
    Read,
    /// Change an object.
    Update,
    /// Delete an object.
    Delete,
    /// Administer (a team: its members and their assignments).
    Manage,
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 5] = [
        Action::Create,
        Action::Read,
        Action::Update,
        Action::Delete,
        Action::Manage,
    ];

    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Read => "read",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Manage => "manage",
        }
    }

    /// Parses a name (`view` is `read`).
    pub fn parse(text: &str) -> Option<Action> {
        match text.to_ascii_lowercase().as_str() {
            "create" => Some(Action::Create),
            "read" | "view" => Some(Action::Read),
            "update" | "edit" => Some(Action::Update),
            "delete" => Some(Action::Delete),
            "manage" => Some(Action::Manage),
            _ => None,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which objects a permission reaches, by the caller's relation to the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Objects the caller owns (and, for `create`, new ones).
    Own,
    /// Objects of the caller's team (owned by a member of a team the caller belongs to), or the team
    /// itself for `manage`.
    Team,
    /// Single objects the caller was granted, for exactly the actions granted.
    Assigned,
    /// Every object of the application.
    All,
}

impl Scope {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Own => "own",
            Scope::Team => "team",
            Scope::Assigned => "assigned",
            Scope::All => "all",
        }
    }

    /// Parses a name.
    pub fn parse(text: &str) -> Option<Scope> {
        match text.to_ascii_lowercase().as_str() {
            "own" => Some(Scope::Own),
            "team" => Some(Scope::Team),
            "assigned" => Some(Scope::Assigned),
            "all" => Some(Scope::All),
            _ => None,
        }
    }
}

/// One permission of a cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permission {
    /// The action.
    pub action: Action,
    /// The objects it reaches.
    pub scope: Scope,
    /// At most this many per calendar month (only `create`).
    pub monthly_quota: Option<u32>,
}

impl Permission {
    fn new(action: Action, scope: Scope) -> Permission {
        Permission {
            action,
            scope,
            monthly_quota: None,
        }
    }
}

/// Reads one cell of a permission matrix, canonically:
///
/// | words | permissions |
/// |---|---|
/// | `-` (or empty) | none |
/// | `Create 3/mo` | `create` on `own`, at most 3 per calendar month |
/// | `View own`, `Read team`, `<action> <scope>` | that action on that scope |
/// | `Unlimited`, `Full CRUD` | every action on `own` |
/// | `Manage` | `manage` on `team` |
/// | `View` | `read` on `team` |
/// | `As assigned` | every action on `assigned` (only the actions granted on each object) |
/// | `All`, `Full` | every action on `all` |
///
/// Several readings may be joined with `,` or `+` (`View own + Create 3/mo`).
pub fn parse_cell(text: &str) -> Result<Vec<Permission>, String> {
    let mut out: Vec<Permission> = Vec::new();
    for part in text.split([',', '+']).map(str::trim) {
        let words: Vec<String> = part.split_whitespace().map(str::to_ascii_lowercase).collect();
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        let every = |scope| Action::ALL.iter().map(move |a| Permission::new(*a, scope));
        match words.as_slice() {
            [] | ["-"] | ["—"] => {}
            ["unlimited"] | ["full", "crud"] => out.extend(every(Scope::Own)),
            ["all"] | ["full"] => out.extend(every(Scope::All)),
            ["manage"] => out.push(Permission::new(Action::Manage, Scope::Team)),
            ["view"] => out.push(Permission::new(Action::Read, Scope::Team)),
            ["as", "assigned"] => out.extend(every(Scope::Assigned)),
            [action, quota] if quota.ends_with("/mo") => {
                let action = Action::parse(action).ok_or_else(|| format!("`{part}`: unknown action"))?;
                if action != Action::Create {
                    return Err(format!("`{part}`: a monthly quota applies to `create` only"));
                }
                let n: u32 = quota
                    .trim_end_matches("/mo")
                    .parse()
                    .map_err(|_| format!("`{part}`: the quota is a whole number per month, e.g. 3/mo"))?;
                out.push(Permission {
                    monthly_quota: Some(n),
                    ..Permission::new(Action::Create, Scope::Own)
                });
            }
            [action, scope] => {
                let action = Action::parse(action).ok_or_else(|| format!("`{part}`: unknown action"))?;
                let scope = Scope::parse(scope)
                    .ok_or_else(|| format!("`{part}`: unknown scope (own, team, assigned, all)"))?;
                out.push(Permission::new(action, scope));
            }
            _ => return Err(format!("`{part}`: not a permission (see docs/authorization.md)")),
        }
    }
    // One permission per (action, scope); a quota-less one wins over a quota.
    out.sort_by_key(|p| (p.action, p.scope, p.monthly_quota.is_some()));
    out.dedup_by(|later, earlier| later.action == earlier.action && later.scope == earlier.scope);
    Ok(out)
}

/// A permission matrix: resource → row (tier, team role or application role) → permissions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Matrix {
    cells: BTreeMap<String, BTreeMap<String, Vec<Permission>>>,
}

impl Matrix {
    /// Reads a matrix written as the seed writes it: a header row `| Role | Resource … |`, a separator
    /// row, then one row per role with a cell per resource. Names are lowercased, spaces become `_`.
    pub fn parse_table(text: &str) -> Result<Matrix, String> {
        let name = |s: &str| s.trim().to_ascii_lowercase().replace(' ', "_");
        let rows: Vec<Vec<&str>> = text
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with('|'))
            .map(|l| l.trim_matches('|').split('|').map(str::trim).collect())
            .collect();
        let header = rows.first().ok_or("no header row")?;
        let resources: Vec<String> = header.iter().skip(1).map(|r| name(r)).collect();
        let mut matrix = Matrix::default();
        for row in rows
            .iter()
            .skip(1)
            .filter(|r| !r.iter().all(|c| c.chars().all(|ch| ch == '-' || ch == ':')))
        {
            let role = name(row.first().ok_or("an empty row")?);
            if row.len() != resources.len() + 1 {
                return Err(format!(
                    "row `{role}` has {} cells, the header {}",
                    row.len() - 1,
                    resources.len()
                ));
            }
            for (resource, cell) in resources.iter().zip(row.iter().skip(1)) {
                let permissions = parse_cell(cell).map_err(|e| format!("{role} × {resource}: {e}"))?;
                matrix
                    .cells
                    .entry(resource.clone())
                    .or_default()
                    .insert(role.clone(), permissions);
            }
        }
        Ok(matrix)
    }

    /// The permissions of `row` on `resource` (none when either is unknown).
    pub fn cell(&self, resource: &str, row: &str) -> &[Permission] {
        self.cells
            .get(resource)
            .and_then(|rows| rows.get(row))
            .map_or(&[], Vec::as_slice)
    }

    /// The resources, by name.
    pub fn resources(&self) -> impl Iterator<Item = &str> {
        self.cells.keys().map(String::as_str)
    }
}

/// How the caller stands to the object a decision is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relation {
    /// The caller owns it (or is creating it).
    pub own: bool,
    /// It belongs to the caller's team (or is the caller's team).
    pub team: bool,
    /// The caller was granted this action on this object.
    pub assigned: bool,
}

/// The permission that allows `action` to a caller whose rows are `rows`, standing `relation` to the
/// object, if any does (in the order `own`, `team`, `assigned`, `all`; a quota-less one first).
pub fn allowing<'m>(
    matrix: &'m Matrix,
    resource: &str,
    rows: &[&str],
    action: Action,
    relation: Relation,
) -> Option<&'m Permission> {
    let reaches = |p: &&Permission| {
        p.action == action
            && match p.scope {
                Scope::All => true,
                Scope::Own => relation.own,
                Scope::Team => relation.team,
                Scope::Assigned => relation.assigned,
            }
    };
    rows.iter()
        .flat_map(|row| matrix.cell(resource, row).iter())
        .filter(reaches)
        .min_by_key(|p| (p.scope, p.monthly_quota.is_some()))
}

/// The seed's permission matrix (seed 003, section 2): tiers free, solo and pro, the team roles
/// team_owner and team_member, and the application's own admin role.
pub const TUFF_FLIPS_MATRIX: &str = "\
| Role | Deals | Properties | Portfolio | Team | Admin |
|---|---|---|---|---|---|
| Free | Create 3/mo | View own | - | - | - |
| Solo | Unlimited | Full CRUD | View own | - | - |
| Pro | Unlimited | Full CRUD | Full CRUD | - | - |
| Team Owner | Unlimited | Full CRUD | Full CRUD | Manage | - |
| Team Member | As assigned | As assigned | View | - | - |
| Admin | All | All | All | All | Full |
";

#[cfg(test)]
mod tests {
    use super::*;

    fn actions(ps: &[Permission], scope: Scope) -> Vec<Action> {
        ps.iter().filter(|p| p.scope == scope).map(|p| p.action).collect()
    }

    #[test]
    fn the_seed_words_read_canonically() {
        assert_eq!(
            parse_cell("Create 3/mo").unwrap(),
            [Permission {
                action: Action::Create,
                scope: Scope::Own,
                monthly_quota: Some(3)
            }]
        );
        assert_eq!(
            parse_cell("View own").unwrap(),
            [Permission::new(Action::Read, Scope::Own)]
        );
        assert_eq!(
            actions(&parse_cell("Unlimited").unwrap(), Scope::Own),
            Action::ALL
        );
        assert_eq!(parse_cell("Full CRUD").unwrap(), parse_cell("Unlimited").unwrap());
        assert_eq!(
            parse_cell("Manage").unwrap(),
            [Permission::new(Action::Manage, Scope::Team)]
        );
        assert_eq!(
            parse_cell("View").unwrap(),
            [Permission::new(Action::Read, Scope::Team)]
        );
        assert_eq!(
            actions(&parse_cell("As assigned").unwrap(), Scope::Assigned),
            Action::ALL
        );
        assert_eq!(actions(&parse_cell("All").unwrap(), Scope::All), Action::ALL);
        assert_eq!(parse_cell("Full").unwrap(), parse_cell("All").unwrap());
        assert_eq!(parse_cell("-").unwrap(), []);
        // Joined readings, duplicates folded (the quota-less permission wins).
        let joined = parse_cell("View own + Create 3/mo, create own").unwrap();
        assert_eq!(
            joined,
            [
                Permission::new(Action::Create, Scope::Own),
                Permission::new(Action::Read, Scope::Own)
            ]
        );
    }

    #[test]
    fn odd_cells_are_refused_with_their_words() {
        for (cell, expected) in [
            ("Read 3/mo", "monthly quota applies to `create` only"),
            ("Create many/mo", "whole number per month"),
            ("Frobnicate own", "unknown action"),
            ("Read theirs", "unknown scope"),
            ("Read own please", "not a permission"),
        ] {
            let e = parse_cell(cell).unwrap_err();
            assert!(e.contains(expected), "{cell}: {e}");
        }
    }

    #[test]
    fn the_tuff_flips_matrix_decides_every_cell() {
        let m = Matrix::parse_table(TUFF_FLIPS_MATRIX).unwrap();
        assert_eq!(
            m.resources().collect::<Vec<_>>(),
            ["admin", "deals", "portfolio", "properties", "team"]
        );
        let own = Relation {
            own: true,
            team: false,
            assigned: false,
        };
        let team = Relation {
            own: false,
            team: true,
            assigned: false,
        };
        let assigned = Relation {
            own: false,
            team: false,
            assigned: true,
        };
        let other = Relation {
            own: false,
            team: false,
            assigned: false,
        };
        let allows = |row: &str, resource: &str, action, relation| {
            allowing(&m, resource, &[row], action, relation).is_some()
        };
        // Free: 3 deals a month, reads their own properties, nothing else.
        let create = allowing(&m, "deals", &["free"], Action::Create, own).unwrap();
        assert_eq!(create.monthly_quota, Some(3));
        assert!(!allows("free", "deals", Action::Read, own));
        assert!(
            allows("free", "properties", Action::Read, own)
                && !allows("free", "properties", Action::Update, own)
        );
        assert!(!allows("free", "portfolio", Action::Read, own));
        // Solo and pro: everything on their own, never another's.
        assert!(
            allows("solo", "deals", Action::Delete, own) && !allows("solo", "deals", Action::Read, other)
        );
        assert!(
            allows("solo", "portfolio", Action::Read, own)
                && !allows("solo", "portfolio", Action::Update, own)
        );
        assert!(allows("pro", "portfolio", Action::Update, own));
        // Team owner manages the team; a member acts only as assigned and views the team's portfolio.
        assert!(
            allows("team_owner", "team", Action::Manage, team)
                && !allows("team_owner", "team", Action::Manage, other)
        );
        assert!(
            allows("team_member", "deals", Action::Update, assigned)
                && !allows("team_member", "deals", Action::Read, own)
        );
        assert!(
            allows("team_member", "portfolio", Action::Read, team)
                && !allows("team_member", "portfolio", Action::Update, team)
        );
        // The application's admin: everything, everywhere.
        assert!(Action::ALL.iter().all(|a| allows("admin", "admin", *a, other)));
        // Several rows: the widest permission wins; an unknown row or resource allows nothing.
        let both = allowing(&m, "deals", &["free", "team_owner"], Action::Create, own).unwrap();
        assert_eq!(both.monthly_quota, None);
        assert!(
            !allows("nobody", "deals", Action::Read, own) && !allows("admin", "ledger", Action::Read, own)
        );
    }
}
