import type { Command, Option } from "commander";
import type { CliContext } from "./context.js";
import { usageError } from "./exit-codes.js";

// `berth completion bash|zsh|fish`: a shell script made from the program's own command tree
// (commander's `commands`, `options`, `registeredArguments`), so it lists exactly the verbs and
// flags `berth` has. Commander has no completion of its own; the npm helpers (tabtab, omelette)
// run the program on every Tab and edit shell rc files, where a printed script is what kubectl
// users expect (`source <(berth completion bash)`). VM, host, image, volume and scale group names
// are asked of the cluster (`berth vm list -o name`, `berth host list -o name`...) with the global
// flags already typed.

/** The verbs whose `list -o name` names complete a value. */
type NamedKind = "vm" | "host" | "image" | "volume" | "scalegroup";

/** Which names a value is completed with: another value's names from the cluster, or fixed choices. */
type ValueKind = { readonly names: NamedKind } | { readonly choices: readonly string[] } | undefined;

/** One command of the tree, by its path (`vm create`; `` for berth itself). */
interface CommandNode {
  readonly path: string;
  readonly subcommands: readonly string[];
  /** Every flag spelling (`-o`, `--output`). */
  readonly flags: readonly string[];
  /** Flags that take a value, with what completes it. */
  readonly valued: ReadonlyMap<string, ValueKind>;
  /** What completes the first positional argument. */
  readonly argument: ValueKind;
}

/** The shells `berth completion` writes for. */
export const COMPLETION_SHELLS = ["bash", "zsh", "fish"] as const;

const flagsOf = (o: Option): string[] => [o.short, o.long].filter((f): f is string => typeof f === "string");

/** Host or VM names by the value's placeholder (`--host <id>`, `--to <host>`, `--pin <host,...>`). */
function optionValueKind(o: Option): ValueKind {
  if (o.argChoices && o.argChoices.length > 0) return { choices: o.argChoices };
  const placeholder = /<([^>]*)>/.exec(o.flags)?.[1] ?? "";
  // `<host>`, `<host[,host...]>`, `<id>` of a host; not `<host:port>` (an address).
  if (/^host(?!:)/.test(placeholder) || (placeholder === "id" && /host/.test(o.description))) return { names: "host" };
  // `--image <image>`, `--volume <volume>` of vm create and plan.
  if (placeholder === "image" || placeholder === "volume") return { names: placeholder };
  // `--protect <vm>` of scalegroup set: an existing VM.
  if (placeholder === "vm") return { names: "vm" };
  return undefined;
}

/**
 * The first argument: an existing host (`host id...`), VM (`VM name`, `the VM's name...`), image
 * (`image name`), volume (`volume name`) or scale group (`scale group name`). A new one's name
 * (`image name: 1-63 ...`) is not completed.
 */
function argumentKind(cmd: Command): ValueKind {
  const arg = cmd.registeredArguments[0];
  if (!arg) return undefined;
  const d = arg.description;
  if (/^host id/.test(d)) return { names: "host" };
  if (d === "VM name" || /^the VM's name/.test(d)) return { names: "vm" };
  if (d === "image name") return { names: "image" };
  if (d === "volume name") return { names: "volume" };
  if (d === "scale group name") return { names: "scalegroup" };
  return undefined;
}

/** Every command of `program`, depth first, with its subcommands, flags and what completes values. */
export function commandTree(program: Command): CommandNode[] {
  const nodes: CommandNode[] = [];
  const globals = program.options;
  const walk = (cmd: Command, path: string): void => {
    const options = [...cmd.options, ...(cmd === program ? [] : globals)];
    const subcommands = cmd.commands.filter((c) => !(c as unknown as { _hidden?: boolean })._hidden).map((c) => c.name());
    const valued = new Map<string, ValueKind>();
    for (const o of options) if (o.required || o.optional) for (const f of flagsOf(o)) valued.set(f, optionValueKind(o));
    nodes.push({
      path,
      subcommands,
      flags: [...new Set([...options.flatMap(flagsOf), "--help"])],
      valued,
      argument: argumentKind(cmd),
    });
    for (const c of cmd.commands) walk(c, path ? `${path} ${c.name()}` : c.name());
  };
  walk(program, "");
  return nodes;
}

/** A word list as a single-quoted shell string (names and flags hold no quote). */
const words = (list: readonly string[]): string => `'${list.join(" ")}'`;

/** The global flags that say which cluster to ask: passed on to `berth vm|host list -o name`. */
const CLUSTER_FLAGS = ["--controller", "--timeout", "--tls-ca", "--tls-cert", "--tls-key", "--insecure"];

/** The bash script (zsh loads it through bashcompinit). Defines `_berth` and registers it for `berth`. */
export function bashCompletion(program: Command): string {
  const nodes = commandTree(program);
  const name = program.name();
  const valued = new Map<string, ValueKind>();
  for (const n of nodes) for (const [f, k] of n.valued) if (!valued.has(f) || k) valued.set(f, k);
  const kindCase = (kind: ValueKind, indent: string): string =>
    !kind
      ? `${indent}return 1 ;;`
      : "names" in kind
        ? `${indent}_berth_names ${kind.names} ;;`
        : `${indent}COMPREPLY=($(compgen -W ${words(kind.choices)} -- "$cur")) ;;`;
  return `# ${name} completion for bash (zsh: through bashcompinit). Generated by: ${name} completion bash
# Load it with: source <(${name} completion bash)

# The cluster's VM, host, image, volume or scale group names, asked with the cluster flags already on the line.
_berth_names() {
  local IFS=$'\\n'
  COMPREPLY=($(compgen -W "$("\${COMP_WORDS[0]}" "\${_berth_cluster[@]}" "$1" list -o name 2>/dev/null)" -- "$cur"))
}

# What completes the value of a flag: 0 when handled.
_berth_flag_value() {
  case "$1" in
${[...valued].map(([f, k]) => `    ${f})\n${kindCase(k, "      ")}`).join("\n")}
    *) return 2 ;;
  esac
  return 0
}

# Flags that take a value (the next word).
_berth_valued=${words([...valued.keys()])}

_berth() {
  local cur="\${COMP_WORDS[COMP_CWORD]}" path="" hasarg="" i w sub
  _berth_cluster=()
  COMPREPLY=()
  # The command path typed so far (subcommand words), skipping flags and their values.
  for ((i = 1; i < COMP_CWORD; i++)); do
    w="\${COMP_WORDS[i]}"
    case "$w" in
      -*)
        case " ${CLUSTER_FLAGS.join(" ")} " in *" $w "*) _berth_cluster+=("$w");; esac
        case " $_berth_valued " in *" $w "*)
          ((i++))
          case " ${CLUSTER_FLAGS.join(" ")} " in *" $w "*) _berth_cluster+=("\${COMP_WORDS[i]}");; esac
          ;;
        esac
        ;;
      *)
        sub="$(_berth_subcommands "$path")"
        if [[ -z "$hasarg" && " $sub " == *" $w "* ]]; then path="\${path:+$path }$w"; else hasarg=1; fi
        ;;
    esac
  done
  local prev="\${COMP_WORDS[COMP_CWORD-1]}"
  if [[ $COMP_CWORD -gt 1 && "$prev" == -* ]]; then
    _berth_flag_value "$prev"
    case $? in 0) return 0 ;; 1) COMPREPLY=($(compgen -f -- "$cur")); return 0 ;; esac
  fi
  if [[ "$cur" == -* ]]; then
    COMPREPLY=($(compgen -W "$(_berth_flags "$path")" -- "$cur"))
    return 0
  fi
  sub="$(_berth_subcommands "$path")"
  if [[ -n "$sub" && -z "$hasarg" ]]; then
    COMPREPLY=($(compgen -W "$sub" -- "$cur"))
    return 0
  fi
  [[ -n "$hasarg" ]] && return 0
  case "$path" in
${nodes
  .filter((n) => n.argument)
  .map((n) => `    ${JSON.stringify(n.path)})\n${kindCase(n.argument, "      ")}`)
  .join("\n")}
  esac
  return 0
}

_berth_subcommands() {
  case "$1" in
${nodes
  .filter((n) => n.subcommands.length > 0)
  .map((n) => `    ${JSON.stringify(n.path)}) echo ${words(n.subcommands)} ;;`)
  .join("\n")}
  esac
}

_berth_flags() {
  case "$1" in
${nodes.map((n) => `    ${JSON.stringify(n.path)}) echo ${words(n.flags)} ;;`).join("\n")}
  esac
}

complete -o default -F _berth ${name}
`;
}

/** The zsh script: the bash one through zsh's bashcompinit. */
export function zshCompletion(program: Command): string {
  return `#compdef ${program.name()}
# ${program.name()} completion for zsh. Load it with: source <(${program.name()} completion zsh)
autoload -U +X bashcompinit && bashcompinit
${bashCompletion(program)}`;
}

/** The fish script: a `complete` line per subcommand and flag of each command, names from the cluster. */
export function fishCompletion(program: Command): string {
  const name = program.name();
  const lines: string[] = [
    `# ${name} completion for fish. Load it with: ${name} completion fish | source`,
    `function __berth_path --description 'the berth command path typed so far'`,
    `    set -l words (commandline -opc)`,
    `    set -e words[1]`,
    `    string join ' ' (string match -v -- '-*' $words)`,
    `end`,
    `complete -c ${name} -f`,
  ];
  for (const n of commandTree(program)) {
    const at = `-n '__berth_path | string match -q -- ${JSON.stringify(n.path)}'`;
    for (const s of n.subcommands) lines.push(`complete -c ${name} ${at} -a ${s}`);
    for (const f of n.flags) {
      const kind = n.valued.get(f);
      const flag = f.startsWith("--") ? `-l ${f.slice(2)}` : `-s ${f.slice(1)}`;
      const value = !n.valued.has(f)
        ? ""
        : kind && "choices" in kind
          ? ` -x -a ${words(kind.choices)}`
          : kind && "names" in kind
            ? ` -x -a '(${name} ${kind.names} list -o name 2>/dev/null)'`
            : " -r";
      lines.push(`complete -c ${name} ${at} ${flag}${value}`);
    }
    if (n.argument && "names" in n.argument) lines.push(`complete -c ${name} ${at} -a '(${name} ${n.argument.names} list -o name 2>/dev/null)'`);
  }
  return `${lines.join("\n")}\n`;
}

/** Adds `berth completion bash|zsh|fish`, which prints the script for the root of `program`. */
export function registerCompletionCommand(program: Command, ctx: CliContext): void {
  program
    .command("completion")
    .description("Print a shell completion script: verbs, flags, their choices, and VM, host, image, volume and scale group names from the cluster")
    .argument("<shell>", COMPLETION_SHELLS.join(", "))
    .addHelpText(
      "after",
      `
VM, host, image, volume and scale group names are completed by running berth vm list -o name
(host, image, volume, scalegroup: the same) with the --controller and TLS flags already typed
(or BERTH_CONTROLLER, BERTH_TLS_*).

Examples:
  source <(berth completion bash)          # in ~/.bashrc
  source <(berth completion zsh)           # in ~/.zshrc
  berth completion fish | source           # in ~/.config/fish/config.fish`,
    )
    .action((shell: string) => {
      switch (shell) {
        case "bash":
          ctx.io.stdout(bashCompletion(program));
          return;
        case "zsh":
          ctx.io.stdout(zshCompletion(program));
          return;
        case "fish":
          ctx.io.stdout(fishCompletion(program));
          return;
        default:
          throw usageError(`completion: unknown shell '${shell}' (use one of: ${COMPLETION_SHELLS.join(", ")})`);
      }
    });
}
