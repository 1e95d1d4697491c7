//! The seed's permission model and the one function that answers "may this caller do that".
//!
//! Global: `infrastructure.admin` (everything), `infrastructure.view` (read everything).
//! Per organization: `infrastructure.organization.create|view|edit|delete`. Any per-organization
//! permission lets its holder see that organization's assets: you cannot edit what you cannot see.

use serde::{Deserialize, Serialize};

use crate::asset::string_enum;
use crate::validation::FieldErrors;

string_enum!(
    /// A permission string from the seed.
    Permission {
        Admin = "infrastructure.admin",
        View = "infrastructure.view",
        OrgCreate = "infrastructure.organization.create",
        OrgView = "infrastructure.organization.view",
        OrgEdit = "infrastructure.organization.edit",
        OrgDelete = "infrastructure.organization.delete",
    }
);

impl Permission {
    /// Whether the permission applies to one organization (and so needs an `organization_id`).
    pub fn is_scoped(self) -> bool {
        !matches!(self, Permission::Admin | Permission::View)
    }
}

/// One permission granted to a user or token, scoped to an organization where it is per-organization.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Grant {
    pub permission: Permission,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<String>,
}

impl Grant {
    pub fn global(permission: Permission) -> Self {
        Self {
            permission,
            organization_id: None,
        }
    }

    pub fn scoped(permission: Permission, organization_id: impl Into<String>) -> Self {
        Self {
            permission,
            organization_id: Some(organization_id.into()),
        }
    }
}

/// Checks the shape of grants: per-organization permissions name one, global ones none.
pub fn validate_grants(field: &str, grants: &[Grant], errors: &mut FieldErrors) {
    for (i, g) in grants.iter().enumerate() {
        match (g.permission.is_scoped(), &g.organization_id) {
            (true, None) => errors.add(
                format!("{field}[{i}].organization_id"),
                format!("`{}` needs an organization_id", g.permission),
            ),
            (false, Some(_)) => errors.add(
                format!("{field}[{i}].organization_id"),
                format!("`{}` is global and takes no organization_id", g.permission),
            ),
            _ => {}
        }
    }
}

/// What a caller may do to assets (and to the events about them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    View,
    Create,
    Edit,
    Delete,
}

impl Action {
    fn scoped_permission(self) -> Permission {
        match self {
            Action::View => Permission::OrgView,
            Action::Create => Permission::OrgCreate,
            Action::Edit => Permission::OrgEdit,
            Action::Delete => Permission::OrgDelete,
        }
    }
}

/// Which organizations' objects a caller can see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visibility {
    /// Everything, including objects that belong to no organization.
    All,
    /// Only objects of these organizations.
    Organizations(Vec<String>),
}

impl Visibility {
    pub fn allows(&self, org: Option<&str>) -> bool {
        match self {
            Visibility::All => true,
            Visibility::Organizations(orgs) => org.is_some_and(|o| orgs.iter().any(|x| x == o)),
        }
    }
}

/// The effective permissions of one caller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    grants: Vec<Grant>,
}

impl Access {
    pub fn new(mut grants: Vec<Grant>) -> Self {
        grants.sort();
        grants.dedup();
        Self { grants }
    }

    pub fn grants(&self) -> &[Grant] {
        &self.grants
    }

    pub fn is_admin(&self) -> bool {
        self.has_global(Permission::Admin)
    }

    fn has_global(&self, p: Permission) -> bool {
        self.grants
            .iter()
            .any(|g| g.permission == p && g.organization_id.is_none())
    }

    fn has_scoped(&self, p: Permission, org: &str) -> bool {
        self.grants
            .iter()
            .any(|g| g.permission == p && g.organization_id.as_deref() == Some(org))
    }

    /// May the caller do `action` to an object of organization `org` (`None`: no organization)?
    pub fn can(&self, action: Action, org: Option<&str>) -> bool {
        if self.is_admin() {
            return true;
        }
        if action == Action::View && self.has_global(Permission::View) {
            return true;
        }
        let Some(org) = org else { return false };
        match action {
            Action::View => self
                .grants
                .iter()
                .any(|g| g.organization_id.as_deref() == Some(org)),
            other => self.has_scoped(other.scoped_permission(), org),
        }
    }

    /// Whether the caller may do `action` in at least one organization (or everywhere).
    pub fn can_somewhere(&self, action: Action) -> bool {
        self.is_admin()
            || (action == Action::View && self.has_global(Permission::View))
            || self.grants.iter().any(|g| {
                g.organization_id.is_some()
                    && (g.permission == action.scoped_permission() || action == Action::View)
            })
    }

    /// The organizations whose objects the caller can see.
    pub fn visibility(&self) -> Visibility {
        if self.is_admin() || self.has_global(Permission::View) {
            return Visibility::All;
        }
        let mut orgs: Vec<String> = self
            .grants
            .iter()
            .filter_map(|g| g.organization_id.clone())
            .collect();
        orgs.dedup();
        Visibility::Organizations(orgs)
    }

    /// Whether holding `self` implies holding `grant`: admin implies all; global view, or any
    /// permission in an organization, implies that organization's view.
    pub fn covers(&self, grant: &Grant) -> bool {
        if self.is_admin() || self.grants.contains(grant) {
            return true;
        }
        match (grant.permission, grant.organization_id.as_deref()) {
            (Permission::OrgView, Some(org)) => self.can(Action::View, Some(org)),
            _ => false,
        }
    }

    /// The part of `requested` that `self` covers: a token's effective permissions are those of
    /// its grants that its owner still holds.
    pub fn restrict(&self, requested: &[Grant]) -> Access {
        Access::new(
            requested
                .iter()
                .filter(|g| self.covers(g))
                .cloned()
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::{Create, Delete, Edit};
    use Permission::*;
    const SEE: Action = Action::View;

    #[test]
    fn permission_table() {
        let admin = Access::new(vec![Grant::global(Admin)]);
        let viewer = Access::new(vec![Grant::global(View)]);
        let editor = Access::new(vec![Grant::scoped(OrgEdit, "a")]);
        let org_viewer = Access::new(vec![Grant::scoped(OrgView, "a")]);
        let creator = Access::new(vec![
            Grant::scoped(OrgCreate, "a"),
            Grant::scoped(OrgDelete, "a"),
        ]);
        let nobody = Access::default();
        // (who, action, org, expected)
        let table: &[(&Access, Action, Option<&str>, bool)] = &[
            (&admin, Delete, Some("a"), true),
            (&admin, Edit, None, true),
            (&viewer, SEE, Some("a"), true),
            (&viewer, SEE, None, true),
            (&viewer, Edit, Some("a"), false),
            (&editor, Edit, Some("a"), true),
            (&editor, SEE, Some("a"), true),
            (&editor, Edit, Some("b"), false),
            (&editor, SEE, Some("b"), false),
            (&editor, Delete, Some("a"), false),
            (&editor, SEE, None, false),
            (&org_viewer, SEE, Some("a"), true),
            (&org_viewer, Create, Some("a"), false),
            (&creator, Create, Some("a"), true),
            (&creator, Delete, Some("a"), true),
            (&creator, Edit, Some("a"), false),
            (&nobody, SEE, Some("a"), false),
        ];
        for (i, (who, action, org, want)) in table.iter().enumerate() {
            assert_eq!(
                who.can(*action, *org),
                *want,
                "row {i}: {action:?} on {org:?}"
            );
        }
        assert_eq!(viewer.visibility(), Visibility::All);
        assert_eq!(
            creator.visibility(),
            Visibility::Organizations(vec!["a".into()])
        );
        assert!(!nobody.visibility().allows(Some("a")));
    }

    #[test]
    fn tokens_never_exceed_their_owner() {
        let owner = Access::new(vec![Grant::global(View), Grant::scoped(OrgEdit, "a")]);
        let token = owner.restrict(&[
            Grant::scoped(OrgEdit, "a"),
            Grant::scoped(OrgEdit, "b"),
            Grant::scoped(OrgView, "c"),
            Grant::global(Admin),
        ]);
        assert_eq!(
            token.grants(),
            &[Grant::scoped(OrgView, "c"), Grant::scoped(OrgEdit, "a")]
        );
        let editor = Access::new(vec![Grant::scoped(OrgEdit, "a")]);
        assert!(editor.covers(&Grant::scoped(OrgView, "a")));
        assert!(!editor.covers(&Grant::scoped(OrgView, "b")));
        assert!(!editor.covers(&Grant::scoped(OrgDelete, "a")));
    }

    #[test]
    fn grant_shape() {
        let mut e = FieldErrors::default();
        validate_grants(
            "permissions",
            &[
                Grant::global(OrgEdit),
                Grant::scoped(Admin, "x"),
                Grant::scoped(OrgView, "x"),
            ],
            &mut e,
        );
        assert_eq!(e.0.len(), 2);
        assert_eq!(e.0[0].field, "permissions[0].organization_id");
    }
}
