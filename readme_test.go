package domainevents_test

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode"
)

// readmeImports are the packages README snippets may use, by name.
var readmeImports = map[string]string{
	"context": "context", "errors": "errors", "fmt": "fmt", "log": "log", "slog": "log/slog", "http": "net/http",
	"time": "time", "sql": "database/sql", "os": "os",
	"domainevents": "github.com/domainevents/domainevents",
	"broker":       "github.com/domainevents/domainevents/broker",
	"bridge":       "github.com/domainevents/domainevents/bridge",
	"events":       "github.com/domainevents/domainevents/events",
	"eventbus":     "github.com/domainevents/domainevents/eventbus",
	"rabbitmq":     "github.com/domainevents/domainevents/broker/rabbitmq",
	"kafka":        "github.com/domainevents/domainevents/broker/kafka",
	"noop":         "github.com/domainevents/domainevents/broker/noop",
	"retry":        "github.com/domainevents/domainevents/broker/retry",
	"deadletter":   "github.com/domainevents/domainevents/broker/deadletter",
	"outbox":       "github.com/domainevents/domainevents/outbox",
	"memory":       "github.com/domainevents/domainevents/broker/memory",
	"brokertest":   "github.com/domainevents/domainevents/broker/brokertest",
}

// readmePrelude declares what snippets take as given: a ctx, a
// configuration, a bus, a logger, ids, a database, a broker.
const readmePrelude = `
	ctx := context.Background()
	cfg := broker.DefaultConfig()
	bus := eventbus.New()
	logger := slog.Default()
	orderID, userID := "o-1", "u-1"
	var db *sql.DB
	var b broker.Broker
	var refunds interface{ Start(context.Context, string) error }
	_, _, _, _, _, _, _, _, _ = ctx, cfg, bus, logger, orderID, userID, db, b, refunds
`

var fence = regexp.MustCompile("(?s)```go\n(.*?)```")

// snippetDocs are the Markdown files whose Go snippets must compile:
// README.md and every page of docs/.
func snippetDocs(t *testing.T) []string {
	t.Helper()
	pages, err := filepath.Glob(filepath.Join("docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	return append([]string{"README.md"}, pages...)
}

// snippetSource is where a generated file's snippet comes from: the
// Markdown file, the line the snippet starts on there, and the line of the
// generated file that holds the snippet's first line.
type snippetSource struct {
	doc      string
	line     int
	fileLine int
}

// vetPosition is a position go vet reports in a generated file.
var vetPosition = regexp.MustCompile(`[^\s:]*?([A-Za-z0-9_]+_snippet\d+\.go):(\d+)(:\d+)?`)

// TestREADMESnippetsCompile compiles every Go snippet of README.md and of
// docs/*.md as it is pasted, so that they cannot rot: declarations as a
// file, statements as the body of a function (with the prelude's
// variables). Each Markdown file is a package of its own, so two pages may
// declare the same name; a failure names the file and the line.
func TestREADMESnippetsCompile(t *testing.T) {
	dir, err := os.MkdirTemp(".", ".readme-snippets-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	sources := map[string]snippetSource{} // generated file name -> where it comes from
	var pkgs []string
	total, decls, bodies := 0, 0, 0
	for _, doc := range snippetDocs(t) {
		text, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		matches := fence.FindAllSubmatchIndex(text, -1)
		if doc == "README.md" && len(matches) < 3 {
			t.Fatalf("found %d Go snippets in README.md: the fence pattern is broken", len(matches))
		}
		if len(matches) == 0 {
			continue
		}
		prefix := regexp.MustCompile(`[^A-Za-z0-9]+`).ReplaceAllString(doc, "_")
		pkg := filepath.Join(dir, prefix)
		if err := os.Mkdir(pkg, 0o755); err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, "./"+pkg)
		for i, m := range matches {
			snippet := string(text[m[2]:m[3]])
			line := 1 + strings.Count(string(text[:m[2]]), "\n")
			name := fmt.Sprintf("%s_snippet%02d.go", prefix, i)
			fn := ""
			if _, err := parser.ParseFile(token.NewFileSet(), "", "package p\n"+snippet, 0); err == nil {
				decls++
			} else {
				bodies++
				fn = fmt.Sprintf("func snippet%02d() error", i)
			}
			fileLine := writeSnippet(t, filepath.Join(pkg, name), doc, snippet, fn)
			sources[name] = snippetSource{doc: doc, line: line, fileLine: fileLine}
			total++
		}
	}
	if total < 10 {
		t.Fatalf("found %d Go snippets in README.md and docs/*.md: the fence pattern is broken", total)
	}
	out, err := exec.Command("go", append([]string{"vet"}, pkgs...)...).CombinedOutput()
	if err != nil {
		report := vetPosition.ReplaceAllStringFunc(string(out), func(pos string) string {
			m := vetPosition.FindStringSubmatch(pos)
			src, ok := sources[m[1]]
			if !ok {
				return pos
			}
			n, _ := strconv.Atoi(m[2])
			if n < src.fileLine { // the generated part: name the snippet
				return fmt.Sprintf("%s (%s, the snippet at line %d)", pos, src.doc, src.line)
			}
			return fmt.Sprintf("%s:%d%s (%s)", src.doc, src.line+n-src.fileLine, m[3], m[1])
		})
		t.Fatalf("Go snippets do not compile (%d declaration snippets, %d statement snippets):\n%s", decls, bodies, report)
	}
	t.Logf("%d snippets of README.md and docs/*.md compile (%d declarations, %d statements)", total, decls, bodies)
}

// writeSnippet writes a snippet of doc as a file of package snippets, with
// the imports it uses; statements go into fn's body after the prelude,
// with every variable they declare marked used. It returns the line of the
// file on which the snippet's first line is.
func writeSnippet(t *testing.T, path, doc, snippet, fn string) int {
	t.Helper()
	src := snippet
	before := "" // what precedes the snippet in src
	if fn != "" {
		before = fn + " {\n" + readmePrelude + "{\n"
		src = before + snippet + "\n" + markUsed(t, snippet) + "}\nreturn nil\n}\n"
	}
	var imports []string
	for _, name := range usedPackages(t, src) {
		imports = append(imports, fmt.Sprintf("%s %q", name, readmeImports[name]))
	}
	body := "// Code generated by TestREADMESnippetsCompile from " + doc + ". DO NOT EDIT.\n\npackage snippets\n\n"
	if len(imports) > 0 {
		body += "import (\n\t" + strings.Join(imports, "\n\t") + "\n)\n\n"
	}
	if err := os.WriteFile(path, []byte(body+src), 0o644); err != nil {
		t.Fatal(err)
	}
	return 1 + strings.Count(body+before, "\n")
}

// usedPackages lists the known packages src refers to (pkg.Name), from its
// syntax, so that a package named in a comment is not imported.
func usedPackages(t *testing.T, src string) []string {
	f, err := parser.ParseFile(token.NewFileSet(), "", "package p\n"+src, 0)
	if err != nil {
		t.Fatalf("a Go snippet does not parse: %v\n%s", err, src)
	}
	declared := map[string]bool{}
	ast.Inspect(f, func(n ast.Node) bool {
		if a, ok := n.(*ast.AssignStmt); ok && a.Tok == token.DEFINE {
			for _, l := range a.Lhs {
				if id, ok := l.(*ast.Ident); ok {
					declared[id.Name] = true
				}
			}
		}
		return true
	})
	var used []string
	ast.Inspect(f, func(n ast.Node) bool {
		if sel, ok := n.(*ast.SelectorExpr); ok {
			if id, ok := sel.X.(*ast.Ident); ok && readmeImports[id.Name] != "" && !declared[id.Name] && !slices.Contains(used, id.Name) {
				used = append(used, id.Name)
			}
		}
		return true
	})
	slices.Sort(used)
	return used
}

// markUsed returns "_ = x" for every variable the statements declare with
// :=, so that a snippet that shows a call without using its results still
// compiles.
func markUsed(t *testing.T, snippet string) string {
	f, err := parser.ParseFile(token.NewFileSet(), "", "package p\nfunc f() {\n"+snippet+"\n}", 0)
	if err != nil {
		t.Fatalf("a Go snippet does not parse as statements: %v\n%s", err, snippet)
	}
	var names []string
	for _, st := range f.Decls[0].(*ast.FuncDecl).Body.List { // the snippet's own scope only
		if a, ok := st.(*ast.AssignStmt); ok && a.Tok == token.DEFINE {
			for _, l := range a.Lhs {
				if id, ok := l.(*ast.Ident); ok && id.Name != "_" && !slices.Contains(names, id.Name) {
					names = append(names, id.Name)
				}
			}
		}
	}
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, "_ = %s\n", n)
	}
	return b.String()
}

// mdLink is a Markdown link or image target: [text](target).
var mdLink = regexp.MustCompile(`\]\(([^)\s]+)\)`)

// codeSpan is inline code, where brackets are Go, not links.
var codeSpan = regexp.MustCompile("`[^`\n]*`")

// TestREADMELinksResolve checks that every relative link of README.md and
// docs/*.md names a file or directory of the repository and, into a
// Markdown file, a heading it has.
func TestREADMELinksResolve(t *testing.T) {
	checked := 0
	for _, doc := range snippetDocs(t) {
		text, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(string(text), "\n")
		inFence := false
		for i, line := range lines {
			if strings.HasPrefix(line, "```") {
				inFence = !inFence
				continue
			}
			if inFence {
				continue
			}
			for _, m := range mdLink.FindAllStringSubmatch(codeSpan.ReplaceAllString(line, "``"), -1) {
				target := m[1]
				if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
					continue
				}
				file, anchor, _ := strings.Cut(target, "#")
				path := doc
				if file != "" {
					path = filepath.Join(filepath.Dir(doc), file)
				}
				checked++
				if _, err := os.Stat(path); err != nil {
					t.Errorf("%s:%d: link %q: %s does not exist", doc, i+1, target, path)
					continue
				}
				if anchor != "" && strings.HasSuffix(path, ".md") && !slices.Contains(headingAnchors(t, path), anchor) {
					t.Errorf("%s:%d: link %q: %s has no heading #%s", doc, i+1, target, path, anchor)
				}
			}
		}
	}
	if checked < 10 {
		t.Fatalf("checked %d links: the link pattern is broken", checked)
	}
}

// headingAnchors returns the anchors GitHub gives the headings of a
// Markdown file: lower case, punctuation dropped, spaces as hyphens.
func headingAnchors(t *testing.T, path string) []string {
	t.Helper()
	text, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var anchors []string
	inFence := false
	for _, line := range strings.Split(string(text), "\n") {
		if strings.HasPrefix(line, "```") {
			inFence = !inFence
		}
		if inFence || !strings.HasPrefix(line, "#") {
			continue
		}
		title := strings.ToLower(strings.TrimSpace(strings.TrimLeft(line, "#")))
		var b strings.Builder
		for _, r := range title {
			switch {
			case r == ' ':
				b.WriteRune('-')
			case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
				b.WriteRune(r)
			}
		}
		anchors = append(anchors, b.String())
	}
	return anchors
}
