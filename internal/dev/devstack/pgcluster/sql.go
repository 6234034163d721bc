package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Exec runs sql (one or more statements, simple protocol) as the superuser in database db.
func (c *Cluster) Exec(ctx context.Context, db, sql string) error {
	conn, err := pgx.Connect(ctx, c.DSN(db))
	if err != nil {
		return fmt.Errorf("connect to %s: %w", db, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("exec in %s: %w", db, err)
	}
	return nil
}

// CreateRole creates a role that can log in, with password unless it is empty.
func (c *Cluster) CreateRole(ctx context.Context, name, password string) error {
	sql := "CREATE ROLE " + pgx.Identifier{name}.Sanitize() + " LOGIN"
	if password != "" {
		lit, err := quoteLiteral(password)
		if err != nil {
			return fmt.Errorf("create role %s: %w", name, err)
		}
		sql += " PASSWORD " + lit
	}
	if err := c.Exec(ctx, "postgres", sql); err != nil {
		return fmt.Errorf("create role %s: %w", name, err)
	}
	return nil
}

// CreateDatabase creates database name, owned by role owner (the superuser when owner is empty).
func (c *Cluster) CreateDatabase(ctx context.Context, name, owner string) error {
	sql := "CREATE DATABASE " + pgx.Identifier{name}.Sanitize()
	if owner != "" {
		sql += " OWNER " + pgx.Identifier{owner}.Sanitize()
	}
	if err := c.Exec(ctx, "postgres", sql); err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	return nil
}

// quoteLiteral quotes s as an SQL string literal for a server with standard_conforming_strings on
// (the default since 9.1), where a backslash is an ordinary character.
func quoteLiteral(s string) (string, error) {
	if strings.ContainsRune(s, 0) {
		return "", errors.New("string contains a NUL byte")
	}
	return "'" + strings.ReplaceAll(s, "'", "''") + "'", nil
}
