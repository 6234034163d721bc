package funchost

import (
	"fmt"
	"strconv"
	"strings"
)

// segKind orders route segments by precedence, as ASP.NET routing does: literals win over parameters,
// constrained parameters over plain ones, optional ones and catch-alls come last.
type segKind int

const (
	segLiteral segKind = iota
	segConstrained
	segParam
	segOptional
	segCatchAll
)

type routeSeg struct {
	kind       segKind
	literal    string // lower-cased literal
	name       string
	constraint string
}

// routeTemplate is a parsed HTTP trigger route such as "items/{id:int}/{name?}" or "files/{*path}".
type routeTemplate struct {
	segs []routeSeg
}

func parseRoute(tmpl string) (*routeTemplate, error) {
	tmpl = strings.Trim(tmpl, "/")
	rt := &routeTemplate{}
	if tmpl == "" {
		return rt, nil
	}
	parts := strings.Split(tmpl, "/")
	for i, p := range parts {
		if !strings.HasPrefix(p, "{") {
			if strings.ContainsAny(p, "{}") {
				return nil, fmt.Errorf("route %q: segment %q mixes text and parameters", tmpl, p)
			}
			rt.segs = append(rt.segs, routeSeg{kind: segLiteral, literal: strings.ToLower(p)})
			continue
		}
		if !strings.HasSuffix(p, "}") {
			return nil, fmt.Errorf("route %q: segment %q is not a parameter", tmpl, p)
		}
		seg := parseParam(p[1 : len(p)-1])
		if seg.name == "" {
			return nil, fmt.Errorf("route %q: empty parameter name", tmpl)
		}
		if seg.kind == segCatchAll && i != len(parts)-1 {
			return nil, fmt.Errorf("route %q: catch-all parameter must be last", tmpl)
		}
		rt.segs = append(rt.segs, seg)
	}
	for i, s := range rt.segs {
		if s.kind == segOptional {
			for _, later := range rt.segs[i+1:] {
				if later.kind != segOptional && later.kind != segCatchAll {
					return nil, fmt.Errorf("route %q: optional parameter %s must be at the end", tmpl, s.name)
				}
			}
		}
	}
	return rt, nil
}

func parseParam(p string) routeSeg {
	seg := routeSeg{kind: segParam}
	if strings.HasPrefix(p, "*") {
		seg.kind = segCatchAll
		p = strings.TrimLeft(p, "*")
	}
	if name, _, ok := strings.Cut(p, "="); ok { // a default value makes the parameter optional
		p = name
		if seg.kind == segParam {
			seg.kind = segOptional
		}
	}
	if strings.HasSuffix(p, "?") {
		p = strings.TrimSuffix(p, "?")
		if seg.kind == segParam {
			seg.kind = segOptional
		}
	}
	name, constraint, _ := strings.Cut(p, ":")
	seg.name = name
	seg.constraint, _, _ = strings.Cut(strings.ToLower(constraint), ":")
	if seg.kind == segParam && seg.constraint != "" {
		seg.kind = segConstrained
	}
	return seg
}

// match reports whether the path segments (route prefix already removed) match the template.
func (rt *routeTemplate) match(path []string) bool {
	for i, seg := range rt.segs {
		if i >= len(path) {
			return seg.kind == segOptional || seg.kind == segCatchAll
		}
		switch seg.kind {
		case segLiteral:
			if strings.ToLower(path[i]) != seg.literal {
				return false
			}
		case segCatchAll:
			return true
		default:
			if !constraintOK(seg.constraint, path[i]) {
				return false
			}
		}
	}
	return len(path) == len(rt.segs)
}

// constraintOK checks the common route constraints loosely; unknown ones pass.
func constraintOK(constraint, v string) bool {
	switch constraint {
	case "int", "long":
		_, err := strconv.ParseInt(v, 10, 64)
		return err == nil
	case "guid":
		return isGUID(v)
	case "alpha":
		for _, r := range v {
			if (r < 'a' || r > 'z') && (r < 'A' || r > 'Z') {
				return false
			}
		}
		return v != ""
	case "bool":
		return strings.EqualFold(v, "true") || strings.EqualFold(v, "false")
	}
	return true
}

func isGUID(v string) bool {
	v = strings.Trim(v, "{}()")
	if len(v) != 36 {
		return false
	}
	for i, r := range v {
		if i == 8 || i == 13 || i == 18 || i == 23 {
			if r != '-' {
				return false
			}
			continue
		}
		if !strings.ContainsRune("0123456789abcdefABCDEF", r) {
			return false
		}
	}
	return true
}

// lessSpecific reports whether a should lose to b when both match: compare segment kinds in order.
func (rt *routeTemplate) lessSpecific(b *routeTemplate) bool {
	for i := range min(len(rt.segs), len(b.segs)) {
		if rt.segs[i].kind != b.segs[i].kind {
			return rt.segs[i].kind > b.segs[i].kind
		}
	}
	return len(rt.segs) < len(b.segs)
}

// splitPath splits a request path into segments, ignoring empty ones from leading and trailing slashes.
func splitPath(p string) []string {
	p = strings.Trim(p, "/")
	if p == "" {
		return nil
	}
	return strings.Split(p, "/")
}
