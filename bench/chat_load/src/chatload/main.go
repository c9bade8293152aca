// Command chatload is the compiled load generator of bench/chat_fanout.py: it drives one chat room of a
// ChatService server (ours or the seed's Go one) hard enough that the generator is not what limits the figures.
//
// N members join one room over Chat streams, 25 per connection; one or more senders (members too, on their
// own connection) then post M messages each, as fast as possible or at a fixed total rate. Every message text
// carries its send time, so each member measures the delivery latency of every message it receives. The run
// prints one JSON line: join times, deliveries/s, latency percentiles, and the CPU that the server (given its
// pid) and the generator itself spent.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io/ioutil"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"chatload/rpc"

	"google.golang.org/grpc"
)

const joinedNotice = "Has joined the chat"

type config struct {
	target      string
	members     int
	perConn     int
	senders     int
	messages    int
	rate        float64 // messages/s offered in total; 0: as fast as possible
	joinBatch   int     // members joining at once; 1: one after another
	timeout     time.Duration
	serverPid   int
	clockTicks  float64
	joinTimeout time.Duration
}

// result is the JSON line printed at the end.
type result struct {
	Members          int     `json:"members"`
	Senders          int     `json:"senders"`
	Messages         int     `json:"messages"`
	Joined           int     `json:"joined"`
	JoinSeconds      float64 `json:"join_s"`
	JoinComplete     bool    `json:"join_complete"`
	CutOff           int     `json:"cut_off"`
	FirstError       string  `json:"first_error,omitempty"`
	Expected         int64   `json:"expected_deliveries"`
	Deliveries       int64   `json:"deliveries"`
	Complete         bool    `json:"complete"`
	DeliverySeconds  float64 `json:"delivery_s"`
	DeliveriesPerSec float64 `json:"deliveries_per_s"`
	P50Ms            float64 `json:"p50_ms"`
	P99Ms            float64 `json:"p99_ms"`
	ServerCPUJoin    float64 `json:"server_cpu_join_s"`
	ServerCPU        float64 `json:"server_cpu_s"`
	ServerUsPerDeliv float64 `json:"server_cpu_us_per_delivery"`
	GeneratorCPU     float64 `json:"generator_cpu_s"`
	GeneratorJoinCPU float64 `json:"generator_cpu_join_s"`
}

// member is one Chat stream: it joins, then counts and times every sender's message until it has them all.
type member struct {
	name      string
	stream    rpc.ChatService_ChatClient
	latencies []int64 // nanoseconds, one per sender message received
}

// run state shared by the members' readers.
type room struct {
	id         string
	expected   int64 // sender messages each member must receive
	delivered  int64 // atomic
	finished   sync.WaitGroup
	cutOff     int64 // atomic
	stopping   int32 // atomic: 1 once the run cancels its streams
	joins      int64 // atomic: members that have joined, in a batch that completed or not
	firstError atomic.Value
}

func main() {
	cfg := parseFlags()
	res, err := run(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "chatload:", err)
		os.Exit(1)
	}
	line, _ := json.Marshal(res)
	fmt.Println(string(line))
}

func parseFlags() config {
	var cfg config
	flag.StringVar(&cfg.target, "target", "127.0.0.1:8080", "server address")
	flag.IntVar(&cfg.members, "members", 100, "members that receive")
	flag.IntVar(&cfg.perConn, "per-conn", 25, "member streams per connection")
	flag.IntVar(&cfg.senders, "senders", 1, "members that send (on their own connection)")
	flag.IntVar(&cfg.messages, "messages", 2000, "messages each sender posts")
	flag.Float64Var(&cfg.rate, "rate", 0, "messages/s offered by all senders together (0: as fast as possible)")
	flag.IntVar(&cfg.joinBatch, "join-batch", 1, "members joining at once (1: one after another)")
	flag.DurationVar(&cfg.timeout, "timeout", 60*time.Second, "bound on the delivery phase")
	flag.DurationVar(&cfg.joinTimeout, "join-timeout", 60*time.Second, "bound on the join phase")
	flag.IntVar(&cfg.serverPid, "server-pid", 0, "pid of the server, to read its CPU time from /proc")
	flag.Parse()
	cfg.clockTicks = 100 // USER_HZ on Linux
	return cfg
}

func run(cfg config) (*result, error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conns, err := dial(cfg.target, (cfg.members+cfg.perConn-1)/cfg.perConn+1)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, conn := range conns {
			conn.Close()
		}
	}()
	memberConns, senderConn := conns[:len(conns)-1], conns[len(conns)-1]
	created, err := rpc.NewChatServiceClient(senderConn).CreateChatRoom(ctx, &rpc.CreateChatRoomRequest{})
	if err != nil {
		return nil, fmt.Errorf("CreateChatRoom: %w", err)
	}
	r := &room{id: created.RoomId, expected: int64(cfg.messages * cfg.senders)}
	res := &result{Members: cfg.members, Senders: cfg.senders, Messages: cfg.messages}

	cpu0, gen0 := serverCPU(cfg), generatorCPU()
	start := time.Now()
	members := joinAll(ctx, cfg, r, memberConns)
	res.JoinSeconds = time.Since(start).Seconds()
	res.Joined = int(atomic.LoadInt64(&r.joins))
	res.JoinComplete = len(members) == cfg.members
	cpu1, gen1 := serverCPU(cfg), generatorCPU()
	res.ServerCPUJoin, res.GeneratorJoinCPU = cpu1-cpu0, gen1-gen0
	if !res.JoinComplete {
		res.finishErrors(r)
		stop(cancel, r)
		return res, nil
	}

	senders := make([]*member, cfg.senders)
	client := rpc.NewChatServiceClient(senderConn)
	for i := range senders {
		if senders[i], err = join(ctx, client, r.id, fmt.Sprintf("sender-%d", i), 0); err != nil {
			return nil, fmt.Errorf("sender join: %w", err)
		}
		go drain(senders[i].stream)
	}

	cpu1, gen1 = serverCPU(cfg), generatorCPU()
	start = time.Now()
	for i, s := range senders {
		go s.send(cfg, i)
	}
	res.Complete = waitTimeout(&r.finished, cfg.timeout)
	elapsed := time.Since(start).Seconds()
	cpu2, gen2 := serverCPU(cfg), generatorCPU()

	res.Expected = r.expected * int64(cfg.members)
	res.Deliveries = atomic.LoadInt64(&r.delivered)
	res.DeliverySeconds = elapsed
	res.DeliveriesPerSec = float64(res.Deliveries) / elapsed
	res.ServerCPU, res.GeneratorCPU = cpu2-cpu1, gen2-gen1
	if res.Deliveries > 0 {
		res.ServerUsPerDeliv = res.ServerCPU / float64(res.Deliveries) * 1e6
	}
	res.finishErrors(r)
	stop(cancel, r) // the readers that are still at it let go of their latencies
	res.P50Ms, res.P99Ms = percentiles(members)
	return res, nil
}

// stop cancels every stream and waits for the members' readers to end.
func stop(cancel context.CancelFunc, r *room) {
	atomic.StoreInt32(&r.stopping, 1)
	cancel()
	waitTimeout(&r.finished, 10*time.Second)
}

func (res *result) finishErrors(r *room) {
	res.CutOff = int(atomic.LoadInt64(&r.cutOff))
	if first, ok := r.firstError.Load().(string); ok {
		res.FirstError = first
	}
}

func dial(target string, count int) ([]*grpc.ClientConn, error) {
	conns := make([]*grpc.ClientConn, count)
	for i := range conns {
		conn, err := grpc.Dial(target, grpc.WithInsecure())
		if err != nil {
			return nil, err
		}
		conns[i] = conn
	}
	return conns, nil
}

// joinAll joins cfg.members members, cfg.joinBatch at a time, and returns those that joined within the bound.
// A member reads from the moment it has joined, so that the join notices of later members never back up.
func joinAll(ctx context.Context, cfg config, r *room, conns []*grpc.ClientConn) []*member {
	deadline := time.Now().Add(cfg.joinTimeout)
	joined := make([]*member, 0, cfg.members)
	for first := 0; first < cfg.members && time.Now().Before(deadline); first += cfg.joinBatch {
		last := first + cfg.joinBatch
		if last > cfg.members {
			last = cfg.members
		}
		batch := make([]*member, last-first)
		var wg sync.WaitGroup
		for i := first; i < last; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				client := rpc.NewChatServiceClient(conns[i/cfg.perConn])
				m, err := join(ctx, client, r.id, fmt.Sprintf("member-%d", i), r.expected)
				if err != nil {
					r.noteError(err)
					return
				}
				atomic.AddInt64(&r.joins, 1)
				r.finished.Add(1)
				go m.receive(r)
				batch[i-first] = m
			}(i)
		}
		if !waitTimeout(&wg, time.Until(deadline)) {
			break
		}
		for _, m := range batch {
			if m != nil {
				joined = append(joined, m)
			}
		}
	}
	return joined
}

// join opens a Chat stream and reads the history replay up to the member's own join notice, its last message.
func join(ctx context.Context, client rpc.ChatServiceClient, roomID, name string, expected int64) (*member, error) {
	stream, err := client.Chat(ctx)
	if err != nil {
		return nil, err
	}
	join := &rpc.ChatMessage{Join: &rpc.JoinChat{RoomId: roomID, Name: name}}
	if err := stream.Send(join); err != nil {
		return nil, err
	}
	for {
		message, err := stream.Recv()
		if err != nil {
			return nil, fmt.Errorf("%s joining: %w", name, err)
		}
		if message.Name == name && message.Message == joinedNotice {
			return &member{name: name, stream: stream, latencies: make([]int64, 0, expected)}, nil
		}
	}
}

func (r *room) noteError(err error) {
	if atomic.LoadInt32(&r.stopping) == 1 {
		return // the run's own cancellation at its end, not the server's doing
	}
	if atomic.AddInt64(&r.cutOff, 1) == 1 {
		r.firstError.Store(err.Error())
	}
}

// receive reads the member's stream from its join on, so that the others' join notices never back up, and
// counts the senders' messages and their delivery latency until it has every one of them.
func (m *member) receive(r *room) {
	defer r.finished.Done()
	for int64(len(m.latencies)) < r.expected {
		message, err := m.stream.Recv()
		if err != nil {
			r.noteError(fmt.Errorf("%s: %w", m.name, err))
			return
		}
		sent, ok := sentAt(message.Message)
		if !ok {
			continue // a join or leave notice
		}
		m.latencies = append(m.latencies, time.Now().UnixNano()-sent)
		atomic.AddInt64(&r.delivered, 1)
	}
}

// send posts cfg.messages messages "t<unix nanos> <index>/<sequence>", at cfg.rate/cfg.senders messages/s if
// a rate is set. At a fixed rate each message keeps its scheduled slot, so a slow server shows as latency.
func (m *member) send(cfg config, index int) {
	var interval time.Duration
	if cfg.rate > 0 {
		interval = time.Duration(float64(time.Second) * float64(cfg.senders) / cfg.rate)
	}
	start := time.Now()
	for i := 0; i < cfg.messages; i++ {
		if interval > 0 {
			if wait := time.Until(start.Add(time.Duration(i) * interval)); wait > 0 {
				time.Sleep(wait)
			}
		}
		text := "t" + strconv.FormatInt(time.Now().UnixNano(), 10) + " " + strconv.Itoa(index) + "/" + strconv.Itoa(i)
		message := &rpc.ChatMessage{Message: &rpc.Message{Name: m.name, Message: text}}
		if err := m.stream.Send(message); err != nil {
			fmt.Fprintln(os.Stderr, "chatload: send:", err)
			return
		}
	}
}

// drain reads a sender's own stream (the others' notices and messages) so that the server never holds back.
func drain(stream rpc.ChatService_ChatClient) {
	for {
		if _, err := stream.Recv(); err != nil {
			return
		}
	}
}

func sentAt(text string) (int64, bool) {
	if !strings.HasPrefix(text, "t") {
		return 0, false
	}
	end := strings.IndexByte(text, ' ')
	if end < 0 {
		return 0, false
	}
	sent, err := strconv.ParseInt(text[1:end], 10, 64)
	return sent, err == nil
}

func percentiles(members []*member) (float64, float64) {
	var all []int64
	for _, m := range members {
		all = append(all, m.latencies...)
	}
	if len(all) == 0 {
		return 0, 0
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	at := func(q float64) float64 { return float64(all[int(q*float64(len(all)-1))]) / 1e6 }
	return at(0.50), at(0.99)
}

func waitTimeout(wg *sync.WaitGroup, timeout time.Duration) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// serverCPU is the server's user + system CPU time in seconds, from /proc/PID/stat (0 without a pid).
func serverCPU(cfg config) float64 {
	if cfg.serverPid == 0 {
		return 0
	}
	stat, err := ioutil.ReadFile(fmt.Sprintf("/proc/%d/stat", cfg.serverPid))
	if err != nil {
		return 0
	}
	// Fields after the parenthesised command name: state is field 3, utime 14 and stime 15.
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+2:]))
	utime, _ := strconv.ParseFloat(fields[11], 64)
	stime, _ := strconv.ParseFloat(fields[12], 64)
	return (utime + stime) / cfg.clockTicks
}

// generatorCPU is this process's own user + system CPU time in seconds.
func generatorCPU() float64 {
	var usage syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &usage); err != nil {
		return 0
	}
	seconds := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return seconds(usage.Utime) + seconds(usage.Stime)
}
