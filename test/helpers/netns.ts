/**
 * A multi-host test bed on one machine: every host is a network namespace made here, the
 * "internet" a bridge in a namespace of its own (198.18.0.0/24, the range RFC 2544 keeps for
 * benchmarks: routed nowhere), and a host behind NAT sits on a private LAN behind a router
 * namespace that masquerades it. Nothing is connected to the machine's own network: every
 * packet stays inside the namespaces this file made, and `destroy()` (also a test's teardown,
 * also after a failure) deletes them, which deletes every link in them.
 *
 *   internet (bridge br0, 198.18.0.0/24)
 *   ├── public host   198.18.0.<n>
 *   └── router        198.18.0.<n>  ── LAN 10.<k>.0.0/24 ── host 10.<k>.0.2
 *
 * NAT kinds (iptables in the router): `consistent` — MASQUERADE, one public port per source
 * port whatever the destination (endpoint-independent mapping, as most home routers);
 * `random` — MASQUERADE --random-fully, a new random port for every destination (symmetric NAT:
 * carrier-grade and some office firewalls). Both routers drop unsolicited inbound packets, as
 * a router's firewall does (and without which Linux would keep a conntrack entry for a punch
 * that arrived early and remap the host's own reply to another port).
 *
 * Needs root, iproute2 and iptables (`.ci/run` installs iptables); `unavailable()` says why not.
 */
import { type ChildProcess, execFileSync, type SpawnOptions, spawn } from 'node:child_process'
import { readdirSync } from 'node:fs'

export type NatKind = 'consistent' | 'random'

export interface HostSpec {
  name: string
  /** Behind a router of its own doing this kind of NAT; public when absent. */
  nat?: NatKind
}

export interface BedHost {
  name: string
  /** The namespace processes of this host run in. */
  ns: string
  /** The host's own address (private behind NAT). */
  ip: string
  /** Its address as the internet sees it (its router's, behind NAT). */
  publicIp: string
  nat: NatKind | null
}

const NS_DIR = '/var/run/netns'
const PREFIX = 'lmt'

function run(args: string[]): void {
  execFileSync(args[0] as string, args.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] })
}

function tryRun(args: string[]): boolean {
  try {
    run(args)
    return true
  } catch {
    return false
  }
}

function inNs(ns: string, args: string[]): void {
  run(['ip', 'netns', 'exec', ns, ...args])
}

/** Kills every process in namespace `ns` (children of children too), then deletes it. */
function deleteNs(ns: string): void {
  try {
    const pids = execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).split(/\s+/).filter(Boolean)
    for (const pid of pids) {
      try {
        process.kill(Number(pid), 'SIGKILL')
      } catch {}
    }
  } catch {}
  tryRun(['ip', 'netns', 'del', ns])
}

/** Why namespaces cannot be made here, or null when they can. */
export function unavailable(): string | null {
  if (process.platform !== 'linux') return 'network namespaces need Linux'
  if (process.getuid?.() !== 0) return 'network namespaces need root (CI runs as root)'
  for (const tool of [
    ['ip', '-V'],
    ['iptables', '--version'],
  ])
    if (!tryRun(tool)) return `${tool[0]} is not installed (apt-get install iproute2 iptables)`
  const probe = `${PREFIX}${process.pid}probe`
  if (!tryRun(['ip', 'netns', 'add', probe])) return 'ip netns add failed (no CAP_SYS_ADMIN?)'
  const nat = tryRun(['ip', 'netns', 'exec', probe, 'iptables', '-t', 'nat', '-L', '-n'])
  tryRun(['ip', 'netns', 'del', probe])
  return nat ? null : 'iptables cannot use the nat table in a namespace (kernel without netfilter NAT?)'
}

/** Deletes namespaces left by test processes that are gone (a crash skips teardowns). */
function sweepStale(): void {
  let names: string[] = []
  try {
    names = readdirSync(NS_DIR)
  } catch {
    return
  }
  for (const name of names) {
    const m = new RegExp(`^${PREFIX}(\\d+)`).exec(name)
    if (!m) continue
    const pid = Number(m[1])
    let alive = true
    try {
      process.kill(pid, 0)
    } catch {
      alive = false
    }
    if (!alive || pid === process.pid) deleteNs(name)
  }
}

export class NetBed {
  private readonly hosts = new Map<string, BedHost>()
  private readonly children = new Set<ChildProcess>()
  private readonly namespaces: string[] = []
  private readonly inet: string
  private destroyed = false
  private unhook = () => {}

  private constructor(private readonly id: string) {
    this.inet = `${id}-net`
  }

  /** Makes the hosts; anything half made is deleted again when a step fails. */
  static create(specs: HostSpec[]): NetBed {
    sweepStale()
    const bed = new NetBed(`${PREFIX}${process.pid}x${Math.random().toString(36).slice(2, 6)}`)
    // A test that throws can end the process before its teardowns run: clean up on exit too.
    const onExit = () => bed.destroy()
    process.once('exit', onExit)
    bed.unhook = () => process.off('exit', onExit)
    try {
      bed.addNs(bed.inet)
      inNs(bed.inet, ['ip', 'link', 'add', 'br0', 'type', 'bridge'])
      inNs(bed.inet, ['ip', 'link', 'set', 'br0', 'up'])
      specs.forEach((spec, i) => {
        bed.addHost(spec, i)
      })
    } catch (err) {
      bed.destroy()
      throw err
    }
    return bed
  }

  host(name: string): BedHost {
    const h = this.hosts.get(name)
    if (!h) throw new Error(`no host '${name}' in the bed`)
    return h
  }

  /** Starts `command` inside `host`'s namespace; killed (SIGKILL) by `destroy()` if still running. */
  spawn(host: string, command: string, args: string[], opts: SpawnOptions = {}): ChildProcess {
    const child = spawn('ip', ['netns', 'exec', this.host(host).ns, command, ...args], opts)
    this.children.add(child)
    child.once('exit', () => this.children.delete(child))
    return child
  }

  /** Cuts `host` off: its link to the internet (or to its router) goes down. */
  cut(host: string): void {
    this.uplink(host, 'down')
  }

  /** Brings a cut link back. */
  restore(host: string): void {
    this.uplink(host, 'up')
  }

  destroy(): void {
    if (this.destroyed) return
    this.destroyed = true
    this.unhook()
    for (const child of this.children) child.kill('SIGKILL')
    for (const ns of this.namespaces.reverse()) deleteNs(ns)
  }

  private uplink(name: string, state: 'up' | 'down'): void {
    const h = this.host(name)
    // The far end of the host's own link: the bridge port for a public host, the router's LAN side.
    if (h.nat) run(['ip', '-n', `${h.ns}r`, 'link', 'set', 'lan0', state])
    else run(['ip', '-n', this.inet, 'link', 'set', `v${this.indexOf(name)}`, state])
  }

  private indexOf(name: string): number {
    return [...this.hosts.keys()].indexOf(name)
  }

  private addNs(ns: string): void {
    run(['ip', 'netns', 'add', ns])
    this.namespaces.push(ns)
    inNs(ns, ['ip', 'link', 'set', 'lo', 'up'])
  }

  /** A namespace on the bridge at 198.18.0.(10+i), its link named `up0`. */
  private attach(ns: string, i: number): string {
    const ip = `198.18.0.${10 + i}`
    run(['ip', '-n', this.inet, 'link', 'add', `v${i}`, 'type', 'veth', 'peer', 'name', 'up0', 'netns', ns])
    run(['ip', '-n', this.inet, 'link', 'set', `v${i}`, 'master', 'br0', 'up'])
    run(['ip', '-n', ns, 'addr', 'add', `${ip}/24`, 'dev', 'up0'])
    run(['ip', '-n', ns, 'link', 'set', 'up0', 'up'])
    return ip
  }

  private addHost(spec: HostSpec, i: number): void {
    if (!/^[a-z0-9]{1,8}$/.test(spec.name)) throw new Error(`host name '${spec.name}': a-z0-9, 1-8 chars`)
    const ns = `${this.id}-${spec.name}`
    this.addNs(ns)
    if (!spec.nat) {
      const ip = this.attach(ns, i)
      this.hosts.set(spec.name, { name: spec.name, ns, ip, publicIp: ip, nat: null })
      return
    }
    const router = `${ns}r`
    this.addNs(router)
    const publicIp = this.attach(router, i)
    const lan = `10.${i + 1}.0`
    run(['ip', '-n', router, 'link', 'add', 'lan0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns])
    run(['ip', '-n', router, 'addr', 'add', `${lan}.1/24`, 'dev', 'lan0'])
    run(['ip', '-n', router, 'link', 'set', 'lan0', 'up'])
    run(['ip', '-n', ns, 'addr', 'add', `${lan}.2/24`, 'dev', 'eth0'])
    run(['ip', '-n', ns, 'link', 'set', 'eth0', 'up'])
    run(['ip', '-n', ns, 'route', 'add', 'default', 'via', `${lan}.1`])
    inNs(router, ['sysctl', '-qw', 'net.ipv4.ip_forward=1'])
    const masquerade = ['iptables', '-t', 'nat', '-A', 'POSTROUTING', '-o', 'up0', '-j', 'MASQUERADE']
    inNs(router, spec.nat === 'random' ? [...masquerade, '--random-fully'] : masquerade)
    for (const chain of ['INPUT', 'FORWARD'])
      inNs(router, [
        'iptables',
        '-A',
        chain,
        '-i',
        'up0',
        '-m',
        'conntrack',
        '--ctstate',
        'NEW',
        '-j',
        'DROP',
      ])
    this.hosts.set(spec.name, { name: spec.name, ns, ip: `${lan}.2`, publicIp, nat: spec.nat })
  }
}
