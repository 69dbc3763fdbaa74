using Engine.Checkpoints;
using Engine.Kernels;
using Engine.Models.Peft;

namespace Engine.Models;

/// <summary>
/// What the three families (<see cref="Vit.VisionTransformer"/>, <see cref="Swin.Swin"/>, <see cref="ConvNeXt.ConvNeXt"/>)
/// share, so that each family's file holds only its layers and its forward: the parameters in timm's state-dict order
/// with timm's initialisers, the feature sites, the hooks PEFT methods set, saving and disposal.
/// </summary>
public abstract class ImageClassifier : IImageClassifier
{
    readonly Device _device;
    readonly List<Tensor> _parameters = new();
    readonly List<FeatureSite> _sites = new();
    // Random initialisers registered (AddWeight) and not yet run. They run on the first use of the parameters, and never
    // for those a checkpoint replaces: a base model's 86–89 M truncated-normal draws take about 3 s on two cores, which a
    // load would throw away. Every public way to the parameters or their values runs them first (Initialize).
    readonly List<(Tensor Parameter, Action Fill)> _pendingInit = new();
    volatile bool _initialized = true;
    ulong _nextSeed;
    Tensor? _headW, _headB;
    float _headDropRate;

    /// <summary>A model on <paramref name="device"/> whose random initialisers draw seeds <paramref name="seed"/>,
    /// seed + 1, ... in registration order.</summary>
    private protected ImageClassifier(Device device, ulong seed) => (_device, _nextSeed) = (device, seed);

    /// <summary>Registers a parameter named by its timm key (zeros; registration order is the state-dict order).</summary>
    private protected Tensor AddParameter(string name, params int[] shape)
    {
        var t = Tensor.Parameter(_device, name, shape);
        _parameters.Add(t);
        return t;
    }

    /// <summary>Registers a weight initialised as timm does: truncated normal, std 0.02, from the next seed (drawn on the
    /// first use of the parameters unless a checkpoint replaces it first; the values are the seed's either way).</summary>
    private protected Tensor AddWeight(string name, params int[] shape)
    {
        var t = AddParameter(name, shape);
        ulong seed = NextSeed();
        lock (_pendingInit)
        {
            _pendingInit.Add((t, () => Init.TruncatedNormal(t, 0.02f, seed)));
            _initialized = false;
        }
        return t;
    }

    /// <summary>Runs the random initialisers still pending (each weight's own seed, so the values do not depend on when).</summary>
    void Initialize()
    {
        if (_initialized) return;
        lock (_pendingInit)
        {
            foreach (var (_, fill) in _pendingInit) fill();
            InitializersRun += _pendingInit.Count;
            _pendingInit.Clear();
            _initialized = true;
        }
    }

    /// <summary>Random initialisers run so far (tests: a loaded weight's never runs).</summary>
    internal int InitializersRun { get; private set; }

    /// <summary>Registers a [<paramref name="n"/>] parameter filled with <paramref name="value"/> (a norm's unit weight,
    /// a layer scale).</summary>
    private protected Tensor AddFilled(string name, int n, float value)
    {
        var t = AddParameter(name, n);
        Init.Constant(t, value);
        return t;
    }

    /// <summary>The seed for the next random initialiser.</summary>
    private protected ulong NextSeed() => _nextSeed++;

    /// <summary>Registers a LayerNorm site with its unit weight and zero bias (<c>name.weight</c>, <c>name.bias</c>).</summary>
    private protected FeatureSite AddNormSite(string name, int channels) =>
        AddSite(name, channels, SiteProducer.LayerNorm, AddFilled(name + ".weight", channels, 1f), AddParameter(name + ".bias", channels));

    /// <summary>Registers a Linear or convolution site of <paramref name="outputs"/> channels: its weight
    /// (<paramref name="weightShape"/>, <see cref="AddWeight"/>) and, with <paramref name="bias"/>, a zero bias.</summary>
    private protected FeatureSite AddLinearSite(string name, int outputs, bool bias, params int[] weightShape) =>
        AddSite(name, outputs, SiteProducer.Linear, AddWeight(name + ".weight", weightShape), bias ? AddParameter(name + ".bias", outputs) : null);

    /// <summary>Registers a feature site (in forward order).</summary>
    private protected FeatureSite AddSite(string name, int channels, SiteProducer producer, Tensor? weight, Tensor? bias)
    {
        var site = new FeatureSite(name, channels, producer, weight, bias);
        _sites.Add(site);
        return site;
    }

    /// <summary>Registers the classifier head, a Linear from <paramref name="features"/> to <paramref name="classes"/>
    /// (<c>name.weight</c>, <see cref="AddWeight"/>; <c>name.bias</c>, zeros), with dropout at
    /// <paramref name="dropRate"/> before it in train mode; none when <paramref name="classes"/> is 0.</summary>
    private protected void AddHead(string name, int classes, int features, float dropRate)
    {
        if (classes == 0) return;
        _headW = AddWeight(name + ".weight", classes, features);
        _headB = AddParameter(name + ".bias", classes);
        _headDropRate = dropRate;
    }

    /// <summary>Throws unless <paramref name="images"/> is [B, <see cref="InChannels"/>, <see cref="ImageSize"/>,
    /// <see cref="ImageSize"/>].</summary>
    void CheckImages(Tensor images)
    {
        int size = ImageSize;
        if (images.Rank != 4 || images.Shape[1] != InChannels || images.Shape[2] != size || images.Shape[3] != size)
            throw new ArgumentException($"{ImageModels.FamilyTitle(Family)} input {images.Describe()} must be [B, {InChannels}, {size}, {size}]");
    }

    /// <summary>Every parameter in timm's state-dict order, named by its key.</summary>
    public IReadOnlyList<Tensor> Parameters
    {
        get
        {
            Initialize();
            return _parameters;
        }
    }

    /// <inheritdoc/>
    public abstract string Family { get; }

    /// <inheritdoc/>
    public abstract int ImageSize { get; }

    /// <inheritdoc/>
    public abstract int InChannels { get; }

    /// <inheritdoc/>
    public long ParameterCount => _parameters.Sum(p => p.Count);

    /// <summary>The parameter with timm key <paramref name="name"/>.</summary>
    /// <exception cref="KeyNotFoundException">The model has no such parameter.</exception>
    public Tensor this[string name] => Parameters.FirstOrDefault(p => p.Name == name)
        ?? throw new KeyNotFoundException($"{ImageModels.FamilyTitle(Family)} has no parameter '{name}'");

    /// <inheritdoc/>
    public IReadOnlyList<FeatureSite> Sites
    {
        get
        {
            Initialize(); // the sites hold the parameters
            return _sites;
        }
    }

    /// <inheritdoc/>
    public Func<FeatureSite, Tensor, Tensor>? SiteHook { get; set; }

    /// <inheritdoc/>
    public bool KeepEveryToken { get; set; }

    /// <inheritdoc/>
    public Func<FeatureSite, ChannelAffine?>? SiteAffine { get; set; }

    /// <inheritdoc/>
    public LinearSiteHook? LinearHook { get; set; }

    /// <inheritdoc/>
    public MlpBranchHook? MlpHook { get; set; }

    /// <inheritdoc/>
    public virtual int NumPrefixTokens => 0;

    /// <inheritdoc/>
    public virtual IEnumerable<Tensor> SparseGradientWeights => Sites.Where(s => s.Producer == SiteProducer.Linear && s.Weight != null).Select(s => s.Weight!);

    /// <summary>Logits [B, num_classes] for images [B, in_chans, img_size, img_size] (NCHW, normalised): the head on
    /// <see cref="ForwardFeatures"/>, after dropout at the config's <c>drop_rate</c> in train mode; with num_classes 0,
    /// the features themselves. A <paramref name="trainSeed"/> turns on dropout and stochastic depth, with masks drawn
    /// from it; null is eval mode.</summary>
    /// <exception cref="DeviceOutOfMemoryException">The device ran out of memory; every tensor the forward had made
    /// is released (<see cref="MadeTensors"/>), so a smaller batch may run next.</exception>
    public Tensor Forward(Tensor images, ulong? trainSeed = null)
    {
        using var made = MadeTensors.Open();
        try
        {
            var features = ForwardFeatures(images, trainSeed);
            if (_headW == null) return features;
            using (features)
            {
                using var dropped = trainSeed.HasValue && _headDropRate > 0 ? Ops.Dropout(features, _headDropRate, CounterRng.Hash(trainSeed.Value, 1)) : null;
                return Ops.Linear(dropped ?? features, _headW, _headB);
            }
        }
        catch
        {
            made.ReleaseLive();
            throw;
        }
    }

    /// <inheritdoc/>
    /// <remarks>Checks the images' shape, and folds every site's affine (SSF's) into its layer at once for the forward
    /// (<see cref="SiteComputation.FoldSiteAffines"/>).</remarks>
    public Tensor ForwardFeatures(Tensor images, ulong? trainSeed = null)
    {
        CheckImages(images);
        Initialize();
        using var folds = this.FoldSiteAffines();
        return Features(images, trainSeed);
    }

    /// <summary>The family's forward up to the head's input: <see cref="ForwardFeatures"/> on checked images.</summary>
    private protected abstract Tensor Features(Tensor images, ulong? trainSeed);

    /// <inheritdoc/>
    public abstract LoadReport Load(string path, LoadMode mode = LoadMode.Strict);

    /// <summary>Loads checkpoint <paramref name="entries"/> (named by timm keys) read from <paramref name="path"/> into
    /// the parameters: every key checked, one message listing every problem; in <see cref="LoadMode.NewHead"/> the
    /// <paramref name="headKeys"/> keep their fresh initialisation. A loaded weight's random initialiser, if it has not
    /// run yet, never does.</summary>
    private protected LoadReport LoadEntries(List<CheckpointEntry> entries, string path, LoadMode mode, params string[] headKeys)
    {
        var skip = mode == LoadMode.NewHead ? new HashSet<string>(headKeys) : null;
        if (skip != null) entries.RemoveAll(e => skip.Contains(e.Name));
        var report = StateDict.Load(_parameters, entries, path, strict: mode != LoadMode.NonStrict, skip);
        var loaded = report.Loaded.ToHashSet();
        lock (_pendingInit)
        {
            _pendingInit.RemoveAll(p => p.Parameter.Name is { } name && loaded.Contains(name));
            _initialized = _pendingInit.Count == 0;
        }
        return report;
    }

    /// <summary>Writes every parameter to a .safetensors file under its timm key (atomically).</summary>
    public void Save(string path) => SafeTensors.Write(path, Parameters);

    /// <inheritdoc/>
    public abstract void SaveConfig(string path);

    /// <summary>Frees the parameters and whatever else the family holds on the device.</summary>
    public void Dispose()
    {
        lock (_pendingInit) _pendingInit.Clear(); // nothing to draw for parameters about to go
        DisposeBuffers();
        foreach (var p in _parameters) p.Dispose();
        _parameters.Clear();
    }

    /// <summary>Frees the family's device tensors that are not parameters (Swin's shift masks).</summary>
    private protected virtual void DisposeBuffers() { }
}
